"""Vision backbones (ViT encoders) that MASt3R-style decoders sit on."""
