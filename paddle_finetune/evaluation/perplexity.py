"""Language-model metrics: the token-weighted mean loss, its exp, and per-row loss sums.

Sums are math.fsum: exact, so they do not depend on the order rows or tokens are added in (one process and
several ranks add them in different groupings).

Imports: the standard library only.
"""
import math


def perplexity(mean_loss):
    """exp(loss), capped so an untrained model's huge loss still logs as a number."""
    return math.exp(min(mean_loss, 50.0))


def per_row_sums(token_losses, token_rows, num_rows):
    """[[summed loss, tokens] per row] from each token's loss and the row it belongs to."""
    by_row = [[] for _ in range(num_rows)]
    for loss, row in zip(token_losses, token_rows):
        by_row[row].append(loss)
    return [[math.fsum(losses), len(losses)] for losses in by_row]


def loss_and_perplexity(sums):
    """{"loss", "perplexity"} from [summed loss, tokens] pairs (rows or batches): the token-weighted mean loss and
    its exp."""
    count = sum(n for _, n in sums)
    loss = math.fsum(total for total, _ in sums) / max(count, 1)
    return {"loss": loss, "perplexity": perplexity(loss)}
