using FineAlign.Data.Corpus;

namespace FineAlign.Data;

/// <summary>
/// K-fold cross-validation over the lines of a data file (<c>--folds N --fold K --fold-seed S</c>): the file's lines are
/// shuffled by a seeded generator and dealt round-robin into N folds, so the folds partition the file, differ in size by
/// at most one line, and depend only on (line count, N, S). Fold K (1-based) is the test set, the other lines train.
/// Blank or skipped lines keep their fold: a pair's fold is a function of its line number alone.
/// </summary>
public sealed record FoldSpec(int Folds, int Fold, int Seed)
{
    /// <summary>
    /// The fold options as a user gave them, checked: both or neither of <paramref name="folds"/> and
    /// <paramref name="fold"/>; 2 ≤ folds; 1 ≤ fold ≤ folds. Null when neither is given.
    /// </summary>
    public static FoldSpec? From(int? folds, int? fold, int seed)
    {
        if (folds is null && fold is null) return null;
        if (folds is null) throw new FineAlignException($"--fold {fold} needs --folds N (the number of folds the file is split into).");
        if (fold is null) throw new FineAlignException($"--folds {folds} needs --fold K (which of the {folds} folds is held out, 1 to {folds}).");
        if (folds < 2) throw new FineAlignException($"--folds {folds}: cross-validation needs at least 2 folds.");
        if (fold < 1 || fold > folds) throw new FineAlignException($"--fold {fold}: must be between 1 and --folds {folds}.");
        return new FoldSpec(folds.Value, fold.Value, seed);
    }

    /// <summary>How fold K of <paramref name="path"/> is named in logs.</summary>
    public string Describe(string path) => $"{path} (fold {Fold} of {Folds}, fold seed {Seed})";
}

public static class KFold
{
    /// <summary>
    /// The 1-based fold of each line: element i is the fold of line i + 1. A seeded Fisher–Yates shuffle of the line
    /// indices, then position p goes to fold p mod N + 1.
    /// </summary>
    public static int[] Assign(long lines, int folds, int seed)
    {
        if (folds < 2) throw new FineAlignException($"--folds {folds}: cross-validation needs at least 2 folds.");
        if (lines < folds) throw new FineAlignException($"--folds {folds}: the file has only {lines} lines, fewer than the folds.");
        if (lines > int.MaxValue) throw new FineAlignException($"cross-validation over {lines} lines: too many for one in-memory fold table.");
        int n = (int)lines;
        var order = Enumerable.Range(0, n).ToArray();
        var rng = CorpusRandom.ForItem(seed, 0, stream: 0xF01D);
        for (int i = n - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        var fold = new int[n];
        for (int p = 0; p < n; p++) fold[order[p]] = p % folds + 1;
        return fold;
    }

    /// <summary>The fold of each line of <paramref name="path"/> (counted the way the JSONL reader numbers lines).</summary>
    public static int[] Assign(string path, FoldSpec spec) => Assign(File.ReadLines(path).LongCount(), spec.Folds, spec.Seed);

    /// <summary>
    /// Items whose line (1-based, from <paramref name="lineOf"/>) is in fold K go to the test set, the rest to training;
    /// both must be non-empty (<paramref name="noun"/> names the items in the error, e.g. "pairs").
    /// </summary>
    public static (List<T> Train, List<T> Test) Split<T>(IReadOnlyList<T> items, Func<T, long> lineOf, string path, FoldSpec spec, string noun)
    {
        var fold = Assign(path, spec);
        bool InTest(T x)
        {
            long line = lineOf(x);
            if (line < 1 || line > fold.Length)
                throw new FineAlignException($"--fold {spec.Fold}: {noun} from line {line} of {path}, which has {fold.Length} lines (built-in or in-memory data has no folds)");
            return fold[line - 1] == spec.Fold;
        }
        var train = new List<T>();
        var test = new List<T>();
        foreach (var x in items) (InTest(x) ? test : train).Add(x);
        if (train.Count == 0 || test.Count == 0)
            throw new FineAlignException($"--folds {spec.Folds} --fold {spec.Fold} leaves {train.Count} training and {test.Count} held-out {noun} of {path}");
        return (train, test);
    }

    /// <summary>
    /// Copies the lines of <paramref name="path"/> into a training file (every fold but K) and a test file (fold K), in
    /// file order, line for line; both are written to temporary siblings first and renamed at the end, so a failure leaves
    /// no half-written output. Returns the two line counts.
    /// </summary>
    public static (int Train, int Test) WriteFiles(string path, FoldSpec spec, string trainOut, string testOut)
    {
        var fold = Assign(path, spec);
        string trainTmp = trainOut + ".tmp", testTmp = testOut + ".tmp";
        int train = 0, test = 0;
        try
        {
            using (var tw = new StreamWriter(trainTmp) { NewLine = "\n" })
            using (var sw = new StreamWriter(testTmp) { NewLine = "\n" })
            {
                long i = 0;
                foreach (var line in File.ReadLines(path))
                {
                    if (fold[i++] == spec.Fold) { sw.WriteLine(line); test++; }
                    else { tw.WriteLine(line); train++; }
                }
            }
            File.Move(trainTmp, trainOut, overwrite: true);
            File.Move(testTmp, testOut, overwrite: true);
        }
        finally
        {
            File.Delete(trainTmp);
            File.Delete(testTmp);
        }
        return (train, test);
    }
}
