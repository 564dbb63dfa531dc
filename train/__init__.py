"""Training: SFT corpus, recipes, LoRA and partial fine-tuning."""
