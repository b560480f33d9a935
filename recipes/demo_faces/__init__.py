"""The recipe of the embedded ``demo-faces`` generator: data (``data``), GLO training (``train``) and the
quality figures of its model card (``evaluate``)."""
