"""Adapters that log other training loops to Stagewise through ``trainers.client``.

``trainers.integrations.hf``: ``StagewiseCallback`` for the Hugging Face ``Trainer``. Each
adapter imports its framework itself, so importing this package imports none of them.
"""
