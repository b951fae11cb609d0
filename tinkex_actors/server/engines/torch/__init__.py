"""Internals of the torch engine (:mod:`tinkex_actors.server.engines.torch_engine`).

``_tiny_model`` builds the default model, ``_files`` writes files atomically and lays out the
Hugging Face cache, ``_base`` loads base models, ``_lora`` holds adapters, their optimizer and
checkpoint format, ``_losses`` the loss functions and ``_sampling`` generation. Importing these
modules imports torch, so only the engine's ``start()`` does.
"""
