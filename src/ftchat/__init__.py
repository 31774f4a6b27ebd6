"""ftchat: answers questions about fine-tuning LLMs from a guide, citing its sections."""

__version__ = "0.1.0"
