"""The run browser: ``skillsweep view`` serves it; ``skillsweep report`` embeds it in report.html."""
