"""Where artefacts live on disk: Parquet tables, float32 matrices, the embedding cache."""
