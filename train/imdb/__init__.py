"""IMDb family: sentiment with a fine-tuned BERT (imdb_bert) and its int8 twin."""
