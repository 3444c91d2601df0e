using System.Collections.Frozen;
using System.Text.RegularExpressions;

namespace FineAlign.Data.Corpus;

/// <summary>How well a text keeps to the built-in corpus's language (see <see cref="CorpusFluency"/>).</summary>
/// <param name="Words">Words of the text (Lexicon's definition: runs of letters, inner apostrophes).</param>
/// <param name="CorpusWords">Of those, words the grammar can produce.</param>
/// <param name="WellFormed">True when every sentence is one the grammar can produce, the last one finished.</param>
public readonly record struct FluencyScore(int Words, int CorpusWords, bool WellFormed)
{
    /// <summary>Share of corpus words (1 for a text without words: nothing foreign in it).</summary>
    public double CorpusWordShare => Words == 0 ? 1.0 : (double)CorpusWords / Words;
}

/// <summary>
/// Recognises the language of <see cref="ReviewCorpus"/>: the words its grammar can write and the sentences it can
/// write, built from the same word lists and sentence templates as <see cref="Grammar"/> (each template below is
/// one case of Grammar's Opening/Body/Rating). The ground-truth reward counts only known words, so garbage plus one
/// positive word scores high; these measures show it. Deliberately a little lenient where Grammar's choices are
/// not visible in the text: a/an, was/were agreement and tense are not checked.
/// </summary>
public static class CorpusFluency
{
    // Templates: UPPERCASE placeholders are word classes; everything else is literal (matched lower-cased).
    private static readonly string[] Templates =
    [
        // openings
        "the FILM was ADJP.", "i watched this FILM WHEN and i VP it.", "this FILM is ADJP.",
        "i went to see this FILM with my COMP and it was ADJP.", "i saw this FILM WHEN.", "what ART ADJ0 FILM it was!",
        "i just saw this FILM and it was ADJP.", "the FILM felt ADJP from start to finish.", "my COMP and i VP this FILM.",
        "i had high hopes for this FILM, and it was ADJP.", "the ASPECT of this FILM BE ADJP.",
        // body
        "SADVthe ASPECT PRED TAIL.", "the ASPECT and the ASPECT BE ADJ0.", "i VP the ASPECT TAIL.",
        "the ASPECT PRED, but the ASPECT PRED.", "the actors gave ADJ0 performances.", "the PERSON gave ART ADJ0 performance.",
        "it BE ART NINT PNOUN.", "i would recommend it to everyone.", "i would RECMOD recommend it.", "i would not recommend it.",
        "i wouldn't recommend it to anyone.", "i would never recommend it.", "the ASPECT BE ADJ0 and ADJ.", "i found the ASPECT ADJ0 TAIL.",
        // rating
        "i give it STARS out of 5 stars.", "rating: STARS/5.", "overall, STARS out of 5.", "STARS star out of 5.", "STARS stars out of 5.",
        "overall, i would rate it STARS out of 5.",
    ];

    private static string Alt(IEnumerable<string> words) =>
        "(?:" + string.Join("|", words.Where(w => w.Length > 0).Distinct().OrderByDescending(w => w.Length).Select(w => Regex.Escape(w.ToLowerInvariant()))) + ")";

    private static IEnumerable<string> Entries(IEnumerable<LexiconEntry> e) => e.Select(x => x.Word);

    private static readonly string Adj = Alt(Entries(Grammar.Adjectives));
    private static readonly string Mod = Alt(Grammar.Intensifiers.Concat(Grammar.Downtoners));
    private static readonly string AdjMod = $"(?:{Mod} )?{Adj}";
    private static readonly string Be = "(?:is|was|are|were)";
    private static readonly string Aspect = Alt(Grammar.AspectsSingular.Concat(Grammar.AspectsPlural));

    private static readonly Dictionary<string, string> Slots = new()
    {
        ["FILM"] = Alt(Grammar.Films),
        [" WHEN"] = $"(?: {Alt(Grammar.When)})?",
        ["COMP"] = Alt(Grammar.Companions),
        ["PERSON"] = Alt(Grammar.People),
        ["ASPECT"] = Aspect,
        ["ADJP"] = $"(?:not )?{AdjMod}",
        ["ADJ0"] = AdjMod,
        ["ADJ"] = Adj,
        ["PRED"] = $"{Be}(?:n't| not)? {AdjMod}",
        ["BE"] = Be,
        ["VP"] = $"(?:didn't {Alt(Entries(Grammar.BaseVerbs))}|(?:{Alt(Grammar.Intensifiers[..3])} )?{Alt(Entries(Grammar.PastVerbs))})",
        ["SADV"] = $"(?:{Alt(Entries(Grammar.SentenceAdverbs))}, )?",
        [" TAIL"] = $"(?:{Alt(Grammar.Tails.Select(t => t.TrimStart()).Where(t => t.Length > 0).Select(t => " " + t))})?",
        ["ART"] = "(?:a|an)",
        ["NINT "] = $"(?:{Alt(Grammar.NounIntensifiers)} )?",
        ["PNOUN"] = Alt(Entries(Grammar.PredicateNouns)),
        ["RECMOD"] = Alt(Grammar.Intensifiers[..3]),
        ["STARS"] = "[1-5]",
    };

    private static readonly Regex Sentence = new("^(?:" + string.Join("|", Templates.Select(Expand)) + ")$", RegexOptions.Compiled | RegexOptions.CultureInvariant);

    private static string Expand(string template)
    {
        // Literal text escaped first; placeholders (longest first, some carry their leading space) then replaced.
        string s = Regex.Escape(template).Replace("\\ ", " ", StringComparison.Ordinal);
        foreach (var (slot, pattern) in Slots.OrderByDescending(kv => kv.Key.Length))
            s = s.Replace(Regex.Escape(slot).Replace("\\ ", " ", StringComparison.Ordinal), pattern, StringComparison.Ordinal);
        return s;
    }

    /// <summary>Every word the grammar can write (lower case): its word lists and the templates' literal words.</summary>
    public static readonly FrozenSet<string> Vocabulary = BuildVocabulary();

    private static FrozenSet<string> BuildVocabulary()
    {
        var words = new HashSet<string>(StringComparer.Ordinal);
        void AddText(string t) { foreach (var w in Lexicon.Annotate(t)) words.Add(w.Word); }
        AddText("is was are were isn't wasn't aren't weren't not didn't a an");   // the literals inside the slots
        foreach (var t in Templates)
            AddText(string.Join(' ', t.Split(' ').Select(x => Regex.Replace(x, "[A-Z0-9]{2,}", " "))));
        foreach (var list in new[] { Grammar.Films, Grammar.AspectsSingular, Grammar.AspectsPlural, Grammar.People, Grammar.Companions,
                     Grammar.When, Grammar.Tails, Grammar.Intensifiers, Grammar.Downtoners, Grammar.NounIntensifiers })
            foreach (var w in list) AddText(w);
        foreach (var e in Grammar.Adjectives.Concat(Grammar.PredicateNouns).Concat(Grammar.SentenceAdverbs).Concat(Grammar.PastVerbs).Concat(Grammar.BaseVerbs))
            AddText(e.Word);
        // Antonyms: ReviewCorpus.Revise writes them into revised reviews (same classes, so already listed; kept for safety).
        foreach (var e in Lexicon.Entries)
            if (e.Antonym is string a && words.Contains(e.Word)) AddText(a);
        return words.ToFrozenSet(StringComparer.Ordinal);
    }

    /// <summary>Whether the grammar can write <paramref name="word"/> (any case).</summary>
    public static bool IsCorpusWord(string word) => Vocabulary.Contains(word.ToLowerInvariant());

    /// <summary>
    /// Fluency of a generated response: the share of its words that are corpus words, and whether
    /// <paramref name="prompt"/> + <paramref name="response"/> is a sequence of complete grammatical sentences
    /// (a response cut off mid-sentence is not well-formed; neither is an empty one, as the prompt is unfinished).
    /// </summary>
    public static FluencyScore Score(string prompt, string response)
    {
        var words = Lexicon.Annotate(response);
        int known = words.Count(w => Vocabulary.Contains(w.Word));
        return new FluencyScore(words.Count, known, IsWellFormed(prompt + response));
    }

    /// <summary>True when <paramref name="text"/> is one or more sentences of the grammar (whitespace between them free).</summary>
    public static bool IsWellFormed(string text)
    {
        string t = Regex.Replace(text.Trim().ToLowerInvariant(), @"\s+", " ");
        if (t.Length == 0) return false;
        foreach (var s in Regex.Split(t, @"(?<=[.!]) "))
            if (!Sentence.IsMatch(s)) return false;
        return true;
    }
}
