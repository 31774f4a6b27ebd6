"""Models: the presets ftchat knows, loading them (weights, adapters, quantisation, decoders)
and the one cache of loaded models. Imports nothing of ftchat above config, text and files."""
