using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace FineAlign.Data;

/// <summary>One labelled review as read from an IMDB-format file (<c>{"text": ..., "label": 0|1}</c>; 1 = positive).</summary>
public sealed record LabelledReview(long Line, string Text, bool Positive);

/// <summary>
/// Reads IMDB-format JSONL (Maas et al. 2011 as shipped in ../shared/data/imdb): a non-empty <c>text</c> and a
/// <c>label</c> that is 0 or 1 on every line; anything else is an error naming file, line and field.
/// </summary>
public static class ImdbReader
{
    public static List<LabelledReview> Read(string path)
    {
        if (!File.Exists(path)) throw new FineAlignException($"{path}: file not found");
        var list = new List<LabelledReview>();
        foreach (var line in JsonlReader.Read(path))
        {
            string text = line.RequireString(path, "text");
            if (text.Trim().Length == 0) throw new DataFormatException(path, line.LineNumber, "text", "is empty");
            if (!line.Object.ContainsKey("label"))
                throw new DataFormatException(path, line.LineNumber, "label", "missing (expected 0 = negative or 1 = positive)");
            var node = line.Object["label"];
            if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue(out double d) || d is not (0 or 1))
                throw new DataFormatException(path, line.LineNumber, "label",
                    $"expected 0 (negative) or 1 (positive), got {JsonlReader.Kind(node)} {node?.ToJsonString() ?? "null"}");
            list.Add(new LabelledReview(line.LineNumber, text, d == 1));
        }
        if (list.Count == 0) throw new FineAlignException($"{path}: no reviews (the file is empty)");
        return list;
    }
}

/// <summary>The four disjoint parts of a review file. <see cref="Judge"/> trains only the held-out judge classifier.</summary>
public sealed record ImdbSplit(IReadOnlyList<LabelledReview> Train, IReadOnlyList<LabelledReview> Validation,
    IReadOnlyList<LabelledReview> Test, IReadOnlyList<LabelledReview> Judge);

/// <summary>
/// Splits reviews into train / validation / test / judge by review: identical texts (the 9k sample holds a few
/// duplicates) form one group that goes to one part, so no review text is in two parts. The groups are shuffled with
/// <see cref="Random"/>(seed), whose sequence .NET keeps fixed for a given seed: same file and seed, same split.
/// </summary>
public static class ImdbSplitter
{
    public static ImdbSplit Split(IReadOnlyList<LabelledReview> reviews, int seed, double validation = 0.05, double test = 0.15, double judge = 0.25)
    {
        if (validation < 0 || test <= 0 || judge <= 0 || validation + test + judge >= 1)
            throw new FineAlignException($"split fractions validation {validation}, test {test}, judge {judge} must be ≥ 0, > 0, > 0 and sum below 1");
        var groups = reviews.GroupBy(r => r.Text.Trim(), StringComparer.Ordinal).Select(g => g.ToList()).OrderBy(g => g[0].Line).ToList();
        var rng = new Random(seed);
        for (int i = groups.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (groups[i], groups[j]) = (groups[j], groups[i]);
        }
        int n = groups.Count;
        int nJudge = Math.Max(1, (int)Math.Round(n * judge)), nTest = Math.Max(1, (int)Math.Round(n * test)), nVal = (int)Math.Round(n * validation);
        if (nJudge + nTest + nVal >= n) throw new FineAlignException($"{n} distinct reviews are too few to split into train, validation, test and judge parts");
        List<LabelledReview> Part(int from, int count) => groups.Skip(from).Take(count).SelectMany(g => g).OrderBy(r => r.Line).ToList();
        return new ImdbSplit(Part(nJudge + nTest + nVal, n), Part(nJudge + nTest, nVal), Part(nJudge, nTest), Part(0, nJudge));
    }
}

/// <summary>
/// A review cut after its first words: the prompt of the positive-continuation task (TRL's gpt2-imdb example takes the
/// first 2–8 tokens; we take whole words) and the rest of the review as its human continuation.
/// </summary>
public static partial class ReviewPrefix
{
    [GeneratedRegex(@"\S+")]
    private static partial Regex Word();

    /// <summary>
    /// (prefix, rest): the first <paramref name="words"/> words (fewer when the review is shorter, keeping at least
    /// one word of continuation) and everything after them, its leading space kept so prefix + rest == text.
    /// </summary>
    public static (string Prefix, string Continuation) Cut(string text, int words)
    {
        if (words < 1) throw new FineAlignException($"a review prefix needs at least one word, got {words}");
        var matches = Word().Matches(text);
        if (matches.Count < 2) return (text, "");
        int k = Math.Min(words, matches.Count - 1);
        int end = matches[k - 1].Index + matches[k - 1].Length;
        return (text[..end], text[end..]);
    }

    /// <summary>The first <paramref name="words"/> words of <paramref name="text"/> (the continuation's length cap), leading space kept.</summary>
    public static string FirstWords(string text, int words)
    {
        var matches = Word().Matches(text);
        if (matches.Count <= words) return text;
        return text[..(matches[words - 1].Index + matches[words - 1].Length)];
    }

    /// <summary>Prefix length of review <paramref name="index"/>: uniform in [min, max] words, fixed by the seed (no HashCode: it is randomised per process).</summary>
    public static int Length(int seed, int index, int min, int max) => new Random((int)(((long)seed * 1_000_003 + index) & int.MaxValue)).Next(min, max + 1);
}
