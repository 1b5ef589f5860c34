"""DEFLATE: multi-modal generative-discriminative attribute value extraction (Zhang et al., ACL 2023)."""
__version__ = "0.1.0"
