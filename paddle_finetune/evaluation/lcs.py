"""Longest common subsequences for ROUGE-L: the length, and the one LCS a textbook backtrack picks.

Both run the bit-parallel LCS (Allison-Dix / Hyyro): bit i of a column ``v`` is 0 where row i+1 of the
classic DP table T steps up from row i, so one big-int add per token of the other sequence replaces a
whole DP column, and T[i][j] = i - popcount(v_j & (2**i - 1)). This is O(len) Python operations instead
of O(len(a) * len(b)), which is what keeps 1000 long pairs cheap.

Imports: the standard library only.
"""

__all__ = ["lcs_length", "backtracked_lcs"]

# int.bit_count needs Python >= 3.10; the fallback keeps older runtimes working.
_popcount = getattr(int, "bit_count", None) or (lambda x: bin(x).count("1"))


def _masks(a):
    """{token: bitmask of its positions in a}."""
    masks = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length(a, b):
    """Length of the longest common subsequence of two token sequences."""
    if len(a) < len(b):
        # Looping over the shorter sequence means fewer interpreted steps;
        # the longer one goes into the (cheap, one-pass) bitmask table.
        a, b = b, a
    if not b:
        return 0
    get = _masks(a).get
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = get(tok)
        if m:
            u = v & m
            # Carries may spill above bit len(a); low bits never depend on
            # them, so masking once at the end is enough.
            v = (v + u) | (v - u)
    return len(a) - _popcount(v & full)


def backtracked_lcs(x, y):
    """The tokens, in order, of the LCS of x and y that the textbook backtrack reaches from T[len(x)][len(y)]:
    on equal tokens go diagonally, else up (i-1) when T[i-1][j] > T[i][j-1], else left (j-1).

    This is the `rouge` package's _recon_lcs(x, y). Which LCS is picked matters there: its ROUGE-L counts the
    distinct tokens of that LCS, and two LCSs of one length can hold different tokens ("aa" vs "ab").
    """
    n = len(x)
    if not n or not y:
        return []
    get = _masks(x).get
    full = (1 << n) - 1
    v = full
    columns = [v]  # columns[j]: the DP column after y[:j]
    for tok in y:
        m = get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
        columns.append(v)
    i, j = n, len(y)
    t = n - _popcount(columns[j])  # T[i][j]
    out = []
    while t:  # T[i][j] == 0: no match is left to the upper left, and the package's walk adds nothing more
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j, t = i - 1, j - 1, t - 1
        elif (columns[j] >> (i - 1)) & 1:
            # T[i-1][j] == t; T[i][j-1] is t or t-1: up only when it is t-1 (a tie goes left)
            if i - _popcount(columns[j - 1] & ((1 << i) - 1)) < t:
                i -= 1
            else:
                j -= 1
        else:
            # T[i-1][j] == t-1, so T[i][j-1] == t: left
            j -= 1
    out.reverse()
    return out
