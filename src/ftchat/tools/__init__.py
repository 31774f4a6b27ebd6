"""Tools around the product: the bench, evaluation, training and the load test."""
