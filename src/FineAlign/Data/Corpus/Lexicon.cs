using System.Collections.Frozen;
using System.Globalization;
using System.Text;

namespace FineAlign.Data.Corpus;

/// <summary>Grammatical role of a lexicon word; decides how it takes part in the valence rule.</summary>
public enum WordClass
{
    /// <summary>Articles, pronouns, auxiliaries, prepositions, neutral content words: valence 0.</summary>
    Function,
    /// <summary>Film nouns (film, movie...), aspects (plot, acting...), people (director...): valence 0.</summary>
    Noun,
    /// <summary>Sentiment-bearing adjective (brilliant +1, dull -0.8, average 0).</summary>
    Adjective,
    /// <summary>Sentiment-bearing verb (loved, hated; base forms love, hate...).</summary>
    Verb,
    /// <summary>Evaluative noun used after "a/an" (masterpiece, mess).</summary>
    PredicateNoun,
    /// <summary>Sentence adverb with its own valence (thankfully, sadly).</summary>
    SentenceAdverb,
    /// <summary>Degree modifier: multiplies the next valenced word by <see cref="LexiconEntry.Factor"/> (very 1.5, somewhat 0.5).</summary>
    Modifier,
    /// <summary>not, never, didn't...: flips and halves the next valenced word in the clause.</summary>
    Negator,
}

/// <summary>One lexicon word. <paramref name="Valence"/> in [-1, 1]; <paramref name="Factor"/> is used only by modifiers;
/// <paramref name="Antonym"/> (same class, opposite sign) drives <see cref="ReviewCorpus.Revise"/>;
/// <paramref name="Plural"/> marks plural nouns (agreement with was/were).</summary>
public sealed record LexiconEntry(string Word, WordClass Class, float Valence, float Factor = 1f, string? Antonym = null, bool Plural = false)
{
    /// <summary>True for words that carry a valence of their own (adjectives, verbs, predicate nouns, sentence adverbs).</summary>
    public bool IsValenced => Class is WordClass.Adjective or WordClass.Verb or WordClass.PredicateNoun or WordClass.SentenceAdverb;
}

/// <summary>One word of a text with its character span and valence.
/// <paramref name="LexiconValence"/> is the dictionary value (0 for unknown words);
/// <paramref name="Valence"/> is the effective value after modifiers and negation (see <see cref="Lexicon"/>).</summary>
public readonly record struct WordValence(string Word, int Start, int Length, float LexiconValence, float Valence, bool Negated, bool Known)
{
    public int End => Start + Length;
    /// <summary>True when the word is sentiment-bearing (counts in the mean of <see cref="Lexicon.TrueReward"/>).</summary>
    public bool IsValenced { get; init; }
}

/// <summary>Sum, count and mean of the effective valences of a text.</summary>
public readonly record struct ValenceScore(float Sum, int ValencedWords, int Words)
{
    /// <summary>Mean effective valence over sentiment-bearing words; 0 when there are none.</summary>
    public float Mean => ValencedWords == 0 ? 0f : Sum / ValencedWords;
}

/// <summary>
/// The built-in sentiment lexicon and the ground-truth valence rule. The rule, applied identically to generated
/// reviews and to ANY text (e.g. model samples):
/// <list type="number">
/// <item>Words are maximal runs of letters (<see cref="char.IsLetter(char)"/>), with an apostrophe allowed between
/// letters ("didn't"); they are lower-cased with the invariant culture. Everything else (digits, punctuation, spaces) is not a word.</item>
/// <item>A word not in the lexicon has valence 0 and is otherwise treated like a function word.</item>
/// <item>Clauses end at any of <c>. , ; : ! ?</c>, a newline, or the word "but".</item>
/// <item>A negator (not, never, didn't, ...) toggles a pending negation that lasts until the next valenced word in the
/// same clause or the clause end. Two negators cancel.</item>
/// <item>Modifiers (very ×1.5, somewhat ×0.5, ...) multiply a pending factor; any word that is neither a modifier, a
/// negator nor valenced resets the factor to 1 (so "very" only affects a valenced word right after it, possibly via
/// other modifiers or a negator: "not very good").</item>
/// <item>The effective valence of a valenced word with lexicon valence v is
/// <c>clamp(v × factor × (negated ? -0.5 : 1), -1, 1)</c>. Negation flips and halves ("not good" is mildly bad,
/// "not awful" mildly good — "shifting" negation rather than a full flip). Then the pending factor and negation reset.</item>
/// <item>Non-valenced words (including negators and modifiers themselves) have effective valence 0.</item>
/// <item><see cref="TrueReward"/> = mean effective valence over valenced words (0 if none): in [-1, 1] and not
/// inflated by length. <see cref="Score"/> also gives the sum for a length-sensitive variant.</item>
/// </list>
/// Approximations by design: "never seen a better film" scores as negated; the generator avoids such forms.
/// </summary>
public static class Lexicon
{
    /// <summary>Multiplier applied to the valence of a negated word (flip and halve).</summary>
    public const float NegationFactor = -0.5f;

    private static readonly LexiconEntry[] _entries = Build();
    private static readonly FrozenDictionary<string, LexiconEntry> _byWord =
        _entries.ToFrozenDictionary(e => e.Word, StringComparer.Ordinal);

    /// <summary>All entries in a fixed order.</summary>
    public static IReadOnlyList<LexiconEntry> Entries => _entries;

    public static IEnumerable<LexiconEntry> OfClass(WordClass c) => _entries.Where(e => e.Class == c);

    /// <summary>The entry for a word (any case), or null when unknown.</summary>
    public static LexiconEntry? Find(string word) =>
        _byWord.TryGetValue(word.ToLowerInvariant(), out var e) ? e : null;

    public static bool Contains(string word) => Find(word) is not null;

    /// <summary>Lexicon (context-free) valence of a word; 0 for unknown and non-valenced words.</summary>
    public static float Valence(string word) => Find(word) is { IsValenced: true } e ? e.Valence : 0f;

    /// <summary>Every word of <paramref name="text"/> with its span and its effective valence (rule in the type summary).</summary>
    public static IReadOnlyList<WordValence> Annotate(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = new List<WordValence>();
        bool negated = false;
        float factor = 1f;
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            if (!char.IsLetter(c))
            {
                if (c is '.' or ',' or ';' or ':' or '!' or '?' or '\n') { negated = false; factor = 1f; }
                i++;
                continue;
            }
            int start = i;
            while (i < text.Length && (char.IsLetter(text[i]) ||
                   (text[i] == '\'' && i + 1 < text.Length && char.IsLetter(text[i + 1]) && i > start)))
                i++;
            string w = text.Substring(start, i - start).ToLowerInvariant();
            var e = _byWord.GetValueOrDefault(w);
            if (e is null)
            {
                factor = 1f;
                words.Add(new WordValence(w, start, i - start, 0f, 0f, false, false));
                continue;
            }
            switch (e.Class)
            {
                case WordClass.Negator:
                    negated = !negated;
                    words.Add(new WordValence(w, start, i - start, 0f, 0f, false, true));
                    break;
                case WordClass.Modifier:
                    factor *= e.Factor;
                    words.Add(new WordValence(w, start, i - start, 0f, 0f, false, true));
                    break;
                case var _ when e.IsValenced:
                    float v = Math.Clamp(e.Valence * factor * (negated ? NegationFactor : 1f), -1f, 1f);
                    words.Add(new WordValence(w, start, i - start, e.Valence, v, negated, true) { IsValenced = true });
                    negated = false; factor = 1f;
                    break;
                default:
                    if (w == "but") negated = false;
                    factor = 1f;
                    words.Add(new WordValence(w, start, i - start, 0f, 0f, false, true));
                    break;
            }
        }
        return words;
    }

    /// <summary>Sum and count of effective valences of any text.</summary>
    public static ValenceScore Score(string text)
    {
        var words = Annotate(text);
        float sum = 0f; int n = 0;
        foreach (var w in words)
            if (w.IsValenced) { sum += w.Valence; n++; }
        return new ValenceScore(sum, n, words.Count);
    }

    /// <summary>Ground-truth sequence reward of any text: mean effective valence over valenced words, 0 if none.</summary>
    public static float TrueReward(string text) => Score(text).Mean;

    /// <summary>
    /// Per-character rewards: each word's effective valence sits on the word's LAST character, all other characters
    /// are 0. Summing over a token's character range gives token-level rewards whose total equals
    /// <see cref="ValenceScore.Sum"/>; a word's reward lands on the token that completes the word.
    /// </summary>
    public static float[] ValenceAtWordEnds(string text)
    {
        var r = new float[text.Length];
        foreach (var w in Annotate(text))
            if (w.IsValenced) r[w.End - 1] = w.Valence;
        return r;
    }

    /// <summary>As <see cref="ValenceAtWordEnds"/> but indexed by UTF-8 byte (for byte-level tokenizers):
    /// the valence sits on the last byte of the word's last character.</summary>
    public static float[] ValenceAtWordEndsUtf8(string text)
    {
        var words = Annotate(text);
        var r = new float[Encoding.UTF8.GetByteCount(text)];
        int charPos = 0, bytePos = 0;
        foreach (var w in words)
        {
            if (!w.IsValenced) continue;
            bytePos += Encoding.UTF8.GetByteCount(text.AsSpan(charPos, w.End - charPos));
            charPos = w.End;
            r[bytePos - 1] = w.Valence;
        }
        return r;
    }

    // ---- the word list -------------------------------------------------------------------------

    private static LexiconEntry[] Build()
    {
        var list = new List<LexiconEntry>();
        void Pairs(WordClass c, string table)
        {
            // "positive:v/negative:v" pairs; each is the other's antonym.
            foreach (var pair in table.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                var halves = pair.Split('/');
                var (p, pv) = Parse(halves[0]); var (n, nv) = Parse(halves[1]);
                list.Add(new LexiconEntry(p, c, pv, Antonym: n));
                list.Add(new LexiconEntry(n, c, nv, Antonym: p));
            }
        }
        void Singles(WordClass c, string table)
        {
            foreach (var item in table.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                var (w, v) = Parse(item);
                list.Add(c == WordClass.Modifier ? new LexiconEntry(w, c, 0f, Factor: v) : new LexiconEntry(w, c, v));
            }
        }
        void Plain(WordClass c, string words, bool plural = false)
        {
            foreach (var w in words.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                list.Add(new LexiconEntry(w, c, 0f, Plural: plural));
        }

        Pairs(WordClass.Adjective,
            "brilliant:1/awful:-1 masterful:1/atrocious:-1 outstanding:0.95/abysmal:-0.95 excellent:0.9/terrible:-0.9 " +
            "superb:0.9/dreadful:-0.9 wonderful:0.9/horrible:-0.9 fantastic:0.9/appalling:-0.9 amazing:0.9/pathetic:-0.85 " +
            "stunning:0.9/clumsy:-0.6 great:0.8/poor:-0.7 beautiful:0.8/ugly:-0.7 gripping:0.8/dull:-0.8 " +
            "thrilling:0.8/tedious:-0.8 captivating:0.8/tiresome:-0.7 delightful:0.8/painful:-0.8 exciting:0.7/boring:-0.8 " +
            "moving:0.7/hollow:-0.6 memorable:0.7/forgettable:-0.6 clever:0.7/stupid:-0.8 charming:0.7/annoying:-0.7 " +
            "enjoyable:0.7/unpleasant:-0.6 funny:0.6/unfunny:-0.6 convincing:0.6/unconvincing:-0.6 engaging:0.6/confusing:-0.5 " +
            "fresh:0.6/stale:-0.6 original:0.6/derivative:-0.5 good:0.6/bad:-0.7 touching:0.6/cheesy:-0.5 " +
            "solid:0.5/weak:-0.5 strong:0.5/flat:-0.5 likable:0.5/unlikable:-0.5 believable:0.5/implausible:-0.5 " +
            "surprising:0.4/predictable:-0.3 nice:0.4/bland:-0.4 pleasant:0.4/messy:-0.4 tight:0.4/slow:-0.4 " +
            "decent:0.3/mediocre:-0.4 watchable:0.2/overlong:-0.3 fine:0.2/uneven:-0.2");
        Singles(WordClass.Adjective,
            "average:0 ordinary:0 typical:0 standard:0 mixed:0 simple:0 long:0 short:0 quiet:0 serious:0 dark:0 " +
            "familiar:0 okay:0.1 modest:0.1 conventional:-0.1");
        Pairs(WordClass.Verb,
            "loved:0.9/hated:-0.9 adored:1/despised:-1 enjoyed:0.7/disliked:-0.6 liked:0.5/loathed:-0.9 " +
            "admired:0.7/detested:-0.9 appreciated:0.6/endured:-0.5 " +
            "love:0.9/hate:-0.9 adore:1/despise:-1 enjoy:0.7/dislike:-0.6 like:0.5/loathe:-0.9 admire:0.7/detest:-0.9 " +
            "appreciate:0.6/endure:-0.5");
        Singles(WordClass.Verb, "recommend:0.6 recommended:0.6");
        Pairs(WordClass.PredicateNoun,
            "masterpiece:1/disaster:-1 gem:0.9/mess:-0.8 triumph:0.9/failure:-0.8 delight:0.8/bore:-0.7 " +
            "treat:0.7/chore:-0.7 joy:0.8/letdown:-0.7 success:0.6/flop:-0.7");
        Pairs(WordClass.SentenceAdverb,
            "thankfully:0.4/sadly:-0.4 happily:0.4/unfortunately:-0.5 luckily:0.4/regrettably:-0.4 " +
            "fortunately:0.4/disappointingly:-0.6");
        Singles(WordClass.SentenceAdverb, "honestly:0 frankly:0 admittedly:0 surprisingly:0");
        Singles(WordClass.Modifier,
            "very:1.5 really:1.5 truly:1.5 extremely:1.5 incredibly:1.5 absolutely:1.5 utterly:1.5 so:1.5 " +
            "remarkably:1.5 genuinely:1.5 real:1.5 complete:1.5 total:1.5 absolute:1.5 " +
            "somewhat:0.5 slightly:0.5 mildly:0.5 fairly:0.75 quite:0.75 rather:0.75");
        Plain(WordClass.Negator, "not never didn't don't doesn't wasn't isn't weren't aren't can't couldn't won't wouldn't hardly");
        Plain(WordClass.Noun,
            "film movie picture feature thriller comedy drama documentary sequel remake western musical romance " +
            "plot story script screenplay acting ending soundtrack dialogue pacing direction cinematography music score " +
            "editing premise atmosphere humor tone cast lighting setting climax twist finale opening animation " +
            "director writer villain hero lead star actor actress composer performance");
        Plain(WordClass.Noun, "characters actors visuals effects performances costumes songs jokes scenes sets", plural: true);
        Plain(WordClass.Function,
            "the a an this that it its i my me we our you and but with of to in for from at on as by or " +
            "is are was were be been would will had have has felt seemed found watched saw see seen went gave give rate " +
            "just high hopes start finish out stars rating overall last night yesterday weekend sunday home theater " +
            "cinema everyone anyone again what friends friend family wife husband kids partner brother sister parents " +
            "all whole both throughout every most time scene");
        return list.ToArray();
    }

    private static (string Word, float Value) Parse(string item)
    {
        int colon = item.IndexOf(':');
        return (item[..colon], float.Parse(item[(colon + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture));
    }
}
