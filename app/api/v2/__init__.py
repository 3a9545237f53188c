"""The Open Inference Protocol (KServe v2) beside the task endpoints: ``routes`` (the
endpoints), ``protocol`` (infer bodies in and out, checked as they stream) and ``models``
(how each model looks as tensors). docs/v2-protocol.md."""
