"""Training recipes: DUNE distillation, MASt3R decoder finetuning, MuM pretraining."""
