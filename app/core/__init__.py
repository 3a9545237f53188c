"""The inference core: loading and validating models, micro-batching, the FAISS index and
image decoding. Plain Python and TensorFlow; nothing here knows about HTTP."""
