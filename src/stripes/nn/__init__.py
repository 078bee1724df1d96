"""Neural-network building blocks: attention (``attention.py``) and the encoder (``transformer.py``)."""
