"""The on-disk index: FAISS vectors, BM25 keywords, chunks and sample questions, built
atomically and checked before use; and the vectors shipped with the package."""
