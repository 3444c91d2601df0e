namespace FineAlign.Data;

/// <summary>Held-out splits of a data file by line (<c>--holdout-last N</c>): the last N lines evaluate, the rest train.</summary>
public static class HoldOut
{
    /// <summary>The line number after which the last <paramref name="n"/> lines of <paramref name="path"/> start.</summary>
    public static long StartLine(string path, int n)
    {
        long lines = File.ReadLines(path).LongCount();
        if (n >= lines) throw new FineAlignException($"--holdout-last {n}: {path} has only {lines} lines");
        return lines - n;
    }

    /// <summary>
    /// Items read from lines after <see cref="StartLine"/> go to the held-out set, the others to training; both must be
    /// non-empty (<paramref name="noun"/> names the items in the error, e.g. "pairs").
    /// </summary>
    public static (List<T> Train, List<T> Eval) LastLines<T>(IReadOnlyList<T> items, Func<T, long> lineOf, string path, int n, string noun)
    {
        long cut = StartLine(path, n);
        var train = items.Where(x => lineOf(x) <= cut).ToList();
        var eval = items.Where(x => lineOf(x) > cut).ToList();
        if (train.Count == 0 || eval.Count == 0)
            throw new FineAlignException($"--holdout-last {n} leaves {train.Count} training and {eval.Count} held-out {noun} of {path}");
        return (train, eval);
    }

    /// <summary>How the held-out part of <paramref name="path"/> is named in logs.</summary>
    public static string Describe(string path, int n) => $"{path} (last {n} lines)";
}
