"""fitting layer: the losses a model is fitted with and the latent-code fit, shared by training and inference."""
