using System.Text.RegularExpressions;
using FineAlign.Data;

namespace FineAlign.Rewards;

/// <summary>
/// <c>known-words:PATH</c>: the share of a response's words that occur in a reference text (a .txt or a JSONL with
/// 'text', e.g. the training reviews) — a fluency measure for a small model ("are its samples real words?"), 0 for a
/// response without words. Words are lower-cased runs of letters joined by ' or -, as <see cref="AfinnLexicon"/> reads them.
/// </summary>
public static partial class KnownWordsReward
{
    public const string Kind = "known-words";

    [GeneratedRegex(@"\p{L}+(?:['\-]\p{L}+)*")]
    private static partial Regex WordPattern();

    public static IEnumerable<string> Words(string text) => WordPattern().Matches(text.ToLowerInvariant()).Select(m => m.Value);

    /// <summary>Known words / all words of <paramref name="text"/> (0 when it has none).</summary>
    public static double Share(string text, IReadOnlySet<string> vocabulary)
    {
        int n = 0, known = 0;
        foreach (var w in Words(text)) { n++; if (vocabulary.Contains(w)) known++; }
        return n == 0 ? 0 : (double)known / n;
    }

    public static HashSet<string> Vocabulary(string path) => PretrainCorpus.ReadDocuments(path).SelectMany(Words).ToHashSet(StringComparer.Ordinal);

    public static RewardSource Build(string name, string path)
    {
        if (path.Length == 0) throw new FineAlignException("reward 'known-words' needs a text file after ':', e.g. known-words:train-text.jsonl");
        var vocabulary = Vocabulary(path);
        return ProgrammaticRewardSource.Sequence(name, e => Share(e.ResponseText
            ?? throw new FineAlignException($"reward source '{name}' needs response texts"), vocabulary));
    }
}
