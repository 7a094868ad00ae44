"""Language-model metrics: the token-weighted mean loss over batches of different sizes, and its exp.

Imports: the standard library only.
"""
import math


def token_weighted_mean(losses_and_counts):
    """Mean loss per predicted token over batches of different sizes."""
    total = sum(loss * n for loss, n in losses_and_counts)
    count = sum(n for _, n in losses_and_counts)
    return total / max(count, 1)


def perplexity(mean_loss):
    """exp(loss), capped so an untrained model's huge loss still logs as a number."""
    return math.exp(min(mean_loss, 50.0))


def loss_and_perplexity(sums):
    """{"loss", "perplexity"} from batches' [summed loss, tokens]: the token-weighted mean loss and its exp."""
    loss = token_weighted_mean([(total / count, count) for total, count in sums if count])
    return {"loss": loss, "perplexity": perplexity(loss)}
