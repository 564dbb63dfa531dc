"""``tiny-qwen3``: a random-weight Qwen3 model with an offline byte-level BPE tokenizer.

Its output is noise; it exists so that every pipeline test can run a real vLLM server and
real PEFT adapters on a 2-core machine in seconds. Everything is seeded, so two builds are
byte-identical and adapters made for one build fit any other.
"""

from __future__ import annotations

from pathlib import Path

from harness.models.chat_template import CHATML_TEMPLATE

# torch, tokenizers and transformers are imported by the builder: seconds, which a prepared model never needs.

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Tokenizer training text: enough English and bench vocabulary for sensible merges.
_CORPUS = """\
You are a careful solver. Read the passage, follow the procedure step by step, then answer.
Does the argument commit a fallacy? Answer yes or no. ANSWER: yes. ANSWER: no.
The procedure has five steps: identify the claim, list the premises, check each inference,
look for hidden assumptions, and state the conclusion with a short justification.
Rank the two options from most to least likely. Which word best names the bias?
A base rate tells how common something is before any specific evidence is considered.
If all managers attend the meeting and Dana is a manager, then Dana attends the meeting.
The committee rejected the proposal because the budget was late, not because it was weak.
Spatial reasoning: the red box is left of the blue box, and the blue box is left of the green.
Confirmation bias is the tendency to search for evidence that supports what one already believes.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and punctuation . , ; : ! ? ( ) [ ] { } " ' - _ / *
"""


def build_tiny_qwen3(out: Path, *, hidden_size: int = 128, num_layers: int = 2,
                     vocab_size: int = 1024, seed: int = 0) -> None:
    """Write a tiny Qwen3 checkpoint and tokenizer to ``out``.

    ``head_dim`` is fixed at 64: vLLM's CPU attention rejects smaller heads.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    fast.chat_template = CHATML_TEMPLATE

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
