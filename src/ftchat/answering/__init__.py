"""Answering a question: retrieval, the gate, evidence, the prompt, verification while
streaming, and the Answer with its citations, in the order a question meets them."""
