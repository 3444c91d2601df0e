using System.Globalization;
using System.Text.RegularExpressions;

namespace FineAlign.Rewards;

/// <summary>A word or phrase of the lexicon found in a text: characters [Start, End) and its valence.</summary>
public readonly record struct LexiconMatch(int Start, int End, int Score);

/// <summary>
/// The AFINN word-valence lexicon (Nielsen 2011, "A new ANEW: evaluation of a word list for sentiment analysis in
/// microblogs"): <c>word&lt;TAB&gt;score</c>, integer valence −5..+5, some entries multi-word phrases. Words are
/// matched case-insensitively as runs of letters and digits joined by ' or - (so "can't", "well-being", "gr8" match),
/// phrases greedily before single words; the score of a text is the sum of its matches' valences, as the afinn
/// package's <c>Afinn.score</c> does.
/// </summary>
public sealed partial class AfinnLexicon
{
    private readonly Dictionary<string, int> _entries;
    private readonly int _maxWords;

    private AfinnLexicon(Dictionary<string, int> entries)
    {
        _entries = entries;
        _maxWords = entries.Keys.Max(k => k.Split(' ').Length);
    }

    public int Count => _entries.Count;

    [GeneratedRegex(@"[\p{L}\p{N}]+(?:['\-][\p{L}\p{N}]+)*")]
    private static partial Regex WordPattern();

    /// <summary>Reads <c>word&lt;TAB&gt;score</c> lines; a malformed line is an error naming file and line.</summary>
    public static AfinnLexicon Load(string path)
    {
        if (!File.Exists(path)) throw new FineAlignException($"{path}: file not found (an AFINN lexicon: word<TAB>score per line)");
        var entries = new Dictionary<string, int>(StringComparer.Ordinal);
        long n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (line.Trim().Length == 0) continue;
            var parts = line.Split('\t');
            if (parts.Length != 2 || parts[0].Trim().Length == 0 ||
                !int.TryParse(parts[1].Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int score))
                throw new FineAlignException($"{path}:{n}: expected word<TAB>integer score, got '{(line.Length > 60 ? line[..60] + "…" : line)}'");
            entries[Normalise(parts[0])] = score;
        }
        if (entries.Count == 0) throw new FineAlignException($"{path}: no lexicon entries");
        return new AfinnLexicon(entries);
    }

    /// <summary>A lexicon from given entries (tests, hand-made lexicons).</summary>
    public static AfinnLexicon From(IEnumerable<KeyValuePair<string, int>> entries)
    {
        var d = entries.ToDictionary(e => Normalise(e.Key), e => e.Value, StringComparer.Ordinal);
        if (d.Count == 0) throw new FineAlignException("an AFINN lexicon needs at least one entry");
        return new AfinnLexicon(d);
    }

    private static string Normalise(string s) => string.Join(' ', s.Trim().ToLowerInvariant().Split(' ', StringSplitOptions.RemoveEmptyEntries));

    /// <summary>The lexicon's entries in <paramref name="text"/>, left to right, the longest phrase first at each word.</summary>
    public List<LexiconMatch> Matches(string text)
    {
        var words = WordPattern().Matches(text.ToLowerInvariant());
        var found = new List<LexiconMatch>();
        for (int i = 0; i < words.Count;)
        {
            int taken = 0;
            for (int k = Math.Min(_maxWords, words.Count - i); k >= 1 && taken == 0; k--)
            {
                string key = k == 1 ? words[i].Value : string.Join(' ', Enumerable.Range(i, k).Select(j => words[j].Value));
                if (_entries.TryGetValue(key, out int score))
                {
                    found.Add(new LexiconMatch(words[i].Index, words[i + k - 1].Index + words[i + k - 1].Length, score));
                    taken = k;
                }
            }
            i += Math.Max(1, taken);
        }
        return found;
    }

    /// <summary>Sum of the valences of the lexicon entries in <paramref name="text"/> (0 when none).</summary>
    public int Score(string text) => Matches(text).Sum(m => m.Score);

    /// <summary>
    /// Token-label spans for a TLCR discriminator from a review whose human label is <paramref name="positive"/>:
    /// a lexicon word is labelled +1 when it is positive in a positive review, −1 when negative in a negative
    /// review; words whose valence contradicts the review's label ("bad" in a rave, "great" in a pan, often negated
    /// or ironic) stay unlabelled (neutral), as do all other words. Our reading of TLCR's labels (Yoon et al. 2024
    /// label tokens from a revision of the response); see docs/IMDB.md.
    /// </summary>
    public List<LabelSpan> Spans(string text, bool positive)
    {
        int sign = positive ? 1 : -1;
        return Matches(text).Where(m => Math.Sign(m.Score) == sign).Select(m => new LabelSpan(m.Start, m.End, sign)).ToList();
    }
}
