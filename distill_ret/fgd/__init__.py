"""FGD (Zhou et al., AAAI 2024): fine-grained distillation for long-document bi-encoders.

spans.py: segmented documents -> span masks and granularity embeddings (eq. 7 and the Table 2 alternatives);
mining.py: document and hierarchical piece hard negatives (eq. 14-15) written as files for the next stage;
export_st.py: a bi-encoder as a Hugging Face BertModel plus a sentence-transformers directory.
"""
