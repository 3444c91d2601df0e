namespace FineAlign.Rewards;

/// <summary>
/// Token labels from a minimal revision. <see cref="OriginalLabels"/>: −1 deleted or substituted, 0 kept;
/// <see cref="RevisedLabels"/>: +1 inserted or substituted, 0 kept. <see cref="Distance"/> = edit distance.
/// </summary>
public sealed record TokenAlignmentResult(sbyte[] OriginalLabels, sbyte[] RevisedLabels, int Distance);

/// <summary>
/// TLCR labelling (Yoon et al. 2024, §3.1): token-level Levenshtein alignment (delete/insert/substitute
/// cost 1) of an original response and its minimal revision.
/// Tie-breaking (deterministic): the backtrace runs from the end of both sequences and, among
/// equal-cost moves, prefers the diagonal (keep if the tokens are equal, otherwise substitute), then
/// deleting an original token, then inserting a revised token. Consequently, among repeated tokens the
/// LAST ones are matched: original [x x x] vs revision [x x] deletes the first x.
/// Memory: two int rows for costs plus one byte per cell for the backtrace (n·m bytes, ≈ 16 MB at 4000×4000).
/// </summary>
public static class TokenAlignment
{
    /// <summary>Largest n·m accepted (256 M cells = 256 MB of backtrace).</summary>
    public const long MaxCells = 256L * 1024 * 1024;

    private const byte Diagonal = 0, Delete = 1, Insert = 2;

    public static TokenAlignmentResult Align(ReadOnlySpan<int> original, ReadOnlySpan<int> revised)
    {
        int n = original.Length, m = revised.Length;
        if ((long)n * m > MaxCells)
            throw new FineAlignException($"token alignment of {n} x {m} tokens exceeds the {MaxCells} cell limit; shorten the responses");
        var orig = new sbyte[n];
        var rev = new sbyte[m];

        // moves[i-1, j-1] = best last move into cell (i, j); row 0 / column 0 are pure inserts / deletes.
        var moves = new byte[(long)n * m];
        var prev = new int[m + 1];
        var cur = new int[m + 1];
        for (int j = 0; j <= m; j++) prev[j] = j;
        for (int i = 1; i <= n; i++)
        {
            cur[0] = i;
            int a = original[i - 1];
            long row = (long)(i - 1) * m;
            for (int j = 1; j <= m; j++)
            {
                int diag = prev[j - 1] + (a == revised[j - 1] ? 0 : 1);
                int del = prev[j] + 1;
                int ins = cur[j - 1] + 1;
                byte move = Diagonal;
                int best = diag;
                if (del < best) { best = del; move = Delete; }
                if (ins < best) { best = ins; move = Insert; }
                cur[j] = best;
                moves[row + j - 1] = move;
            }
            (prev, cur) = (cur, prev);
        }
        int distance = prev[m];

        int x = n, y = m;
        while (x > 0 || y > 0)
        {
            byte move = x == 0 ? Insert : y == 0 ? Delete : moves[(long)(x - 1) * m + y - 1];
            switch (move)
            {
                case Diagonal:
                    if (original[x - 1] != revised[y - 1]) { orig[x - 1] = -1; rev[y - 1] = 1; }
                    x--; y--;
                    break;
                case Delete:
                    orig[x - 1] = -1; x--;
                    break;
                default:
                    rev[y - 1] = 1; y--;
                    break;
            }
        }
        return new TokenAlignmentResult(orig, rev, distance);
    }
}
