"""Training recipe of the feed-forward reconstruction heads (``recon train feedforward``); docs/feedforward.md."""
