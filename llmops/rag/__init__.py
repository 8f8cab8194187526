"""Retrieval: ingestion specs, loaders, token-sized chunking, embedding cache, FAISS indexes, search, IR metrics.

Use it through the workspace: `ws.rag.ingest("rag/handbook.yaml")`, `ws.rag.index("handbook@production")`,
`ws.rag.eval(...)`, `ws.rag.tune(...)` (llmops.rag.service.RagService). Modules import their heavy
dependencies (faiss, torch, sentence-transformers, langchain) inside the functions that need them.
"""
