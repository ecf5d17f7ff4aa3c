"""Bridges to the rest of the Hugging Face stack: PEFT adapters, ``transformers.Trainer``, the Hub,
``datasets`` and OpenPrompt's file formats. Each module imports its third-party library lazily."""
