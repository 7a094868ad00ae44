"""Classification metrics: the confusion matrix, accuracy, macro-F1 (0-100) and per-class
precision/recall/F1/support.

Imports: nothing.
"""

def confusion_matrix(golds, preds, num_labels):
    """matrix[gold][pred] counts, as nested lists (JSON- and TSV-friendly)."""
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for g, p in zip(golds, preds):
        matrix[g][p] += 1
    return matrix


def classification_report(golds, preds, label_names):
    """Accuracy, macro-F1 (0-100 scale) and per-class precision/recall/F1/support.

    Macro-F1 averages over every label of the label map, so a class the model never
    predicts counts as F1 0 rather than vanishing from the average.
    """
    if len(golds) != len(preds):
        raise ValueError(f"golds and preds differ in length: {len(golds)} vs {len(preds)}")
    matrix = confusion_matrix(golds, preds, len(label_names))
    per_class = {}
    for i, name in enumerate(label_names):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(100 * precision, 4), "recall": round(100 * recall, 4),
                           "f1": round(100 * f1, 4), "support": support}
    correct = sum(matrix[i][i] for i in range(len(label_names)))
    return {
        "accuracy": round(100.0 * correct / max(len(golds), 1), 4),
        "macro_f1": round(sum(c["f1"] for c in per_class.values()) / max(len(label_names), 1), 4),
        "per_class": per_class,
        "confusion_matrix": matrix,
    }
