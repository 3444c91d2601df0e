using System.Text;

namespace FineAlign.Data.Corpus;

/// <summary>
/// One generated review. <see cref="Prompt"/> is the opening (a prefix of <see cref="Text"/> containing no valenced
/// word); <see cref="Completion"/> is the rest, so <c>Prompt + Completion == Text</c>.
/// <see cref="Stars"/> (1–5) is the label; <see cref="Polarity"/> = (Stars − 3) / 2 in [-1, 1] is the sentiment that
/// biased every word choice. <see cref="Words"/> = <see cref="Lexicon.Annotate"/>(Text).
/// </summary>
public sealed record Review(long Index, int Stars, string Text, string Prompt, IReadOnlyList<WordValence> Words)
{
    public float Polarity => (Stars - 3) / 2f;
    public string Completion => Text[Prompt.Length..];
    /// <summary><see cref="Lexicon.TrueReward"/> of the text.</summary>
    public float TrueReward => Lexicon.TrueReward(Text);
}

/// <summary>An original review and its minimal revision (antonym swaps) toward one polarity — for TLCR-style token labels.</summary>
public sealed record RevisionPair(Review Original, Review Revised, bool TowardPositive, int ChangedWords);

/// <summary>A preference pair sharing one prompt: <see cref="Chosen"/> and <see cref="Rejected"/> are completions.</summary>
public sealed record PreferencePair(string Prompt, string Chosen, string Rejected, float ChosenReward, float RejectedReward);

/// <summary>
/// Deterministic generator of short movie reviews with known word valences (see <see cref="Lexicon"/> for the rule).
/// Grammar: an opening sentence (whose prefix before the first sentiment slot is the prompt), 2–3 body sentences and a
/// rating sentence. Each review draws Stars uniformly from 1–5; every sentiment slot then draws a target
/// t = Polarity + N(0, 0.3²) (a "contrast" slot, 12% of body sentences, uses −0.6·Polarity instead) and picks a word
/// whose effective valence in context (negation, modifiers) is near t. Review i depends only on (seed, i).
/// </summary>
public static class ReviewCorpus
{
    /// <summary>The corpus seed every command uses unless told otherwise (--corpus-seed).</summary>
    public const int DefaultSeed = 1234;

    /// <summary>Reviews 0..count-1 for <paramref name="seed"/>; same arguments give byte-identical texts.</summary>
    public static IReadOnlyList<Review> Generate(int seed, int count)
    {
        if (count < 0) throw new FineAlignException($"review count must be >= 0, got {count}");
        var result = new Review[count];
        for (int i = 0; i < count; i++) result[i] = GenerateOne(seed, i);
        return result;
    }

    /// <summary>Review number <paramref name="index"/> of the corpus with <paramref name="seed"/>.</summary>
    public static Review GenerateOne(int seed, long index)
    {
        var rng = CorpusRandom.ForItem(seed, index);
        int stars = 1 + rng.Next(5);
        var g = new Grammar(rng, (stars - 3) / 2f);
        string prompt = g.Opening();
        int body = 2 + rng.Next(2);
        for (int s = 0; s < body; s++) g.Body();
        g.Rating(stars);
        string text = g.Text;
        return new Review(index, stars, text, prompt, Lexicon.Annotate(text));
    }

    // ---- prompts --------------------------------------------------------------------------------

    /// <summary>
    /// Whether a prompt belongs to the held-out (eval) split for <paramref name="seed"/>: a fixed 64-bit FNV-1a hash
    /// of (seed, prompt text) below <paramref name="evalFraction"/>. Decided by the text, so a prompt is never in both
    /// splits, and a different seed gives a different split.
    /// </summary>
    public static bool IsEvalPrompt(string prompt, int seed, double evalFraction = 0.1)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in BitConverter.GetBytes(seed)) { h ^= b; h *= 1099511628211UL; }
        foreach (char c in prompt) { h ^= c; h *= 1099511628211UL; }
        h ^= h >> 33; h *= 0xFF51AFD7ED558CCDUL; h ^= h >> 33;   // fmix: FNV's low bits mix poorly
        return (h >> 11) * (1.0 / (1UL << 53)) < evalFraction;
    }

    /// <summary>Distinct prompts (review openings) of the first <paramref name="count"/> reviews, in order of first
    /// appearance, split into train/eval by <see cref="IsEvalPrompt"/>.</summary>
    public static (IReadOnlyList<string> Train, IReadOnlyList<string> Eval) Prompts(int seed, int count, double evalFraction = 0.1)
        => SplitPrompts(Generate(seed, count), seed, evalFraction);

    public static (IReadOnlyList<string> Train, IReadOnlyList<string> Eval) SplitPrompts(IEnumerable<Review> reviews, int seed, double evalFraction = 0.1)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var train = new List<string>(); var eval = new List<string>();
        foreach (var r in reviews)
            if (seen.Add(r.Prompt))
                (IsEvalPrompt(r.Prompt, seed, evalFraction) ? eval : train).Add(r.Prompt);
        return (train, eval);
    }

    // ---- revisions ------------------------------------------------------------------------------

    /// <summary>
    /// Minimal revision toward one polarity: every valenced word whose effective valence has the wrong sign
    /// (&lt; 0 when <paramref name="towardPositive"/>, &gt; 0 otherwise) and has an antonym is replaced by it, keeping
    /// capitalisation and fixing a preceding "a"/"an". Negation context is kept ("not good" → "not bad"), so each
    /// replaced word's effective valence changes sign and <see cref="Lexicon.TrueReward"/> strictly moves toward the
    /// target whenever <see cref="RevisionPair.ChangedWords"/> &gt; 0. The rating sentence is left as it was (a
    /// minimal edit, like the rewrites TLCR labels).
    /// </summary>
    public static RevisionPair Revise(Review review, bool towardPositive)
    {
        string text = review.Text;
        var words = review.Words;
        var sb = new StringBuilder(text.Length + 16);
        int pos = 0, changed = 0;
        for (int k = 0; k < words.Count; k++)
        {
            var w = words[k];
            bool wrong = towardPositive ? w.Valence < 0 : w.Valence > 0;
            if (!w.IsValenced || !wrong || Lexicon.Find(w.Word)?.Antonym is not { } antonym) continue;
            // Fix "a"/"an" right before the replaced word (previous word, only spaces between).
            if (k > 0 && words[k - 1] is { Word: "a" or "an" } art && text.AsSpan(art.End, w.Start - art.End).Trim().IsEmpty)
            {
                sb.Append(text, pos, art.Start - pos);
                string article = Article(antonym);
                sb.Append(char.IsUpper(text[art.Start]) ? Capitalize(article) : article);
                pos = art.End;
            }
            sb.Append(text, pos, w.Start - pos);
            sb.Append(char.IsUpper(text[w.Start]) ? Capitalize(antonym) : antonym);
            pos = w.End;
            changed++;
        }
        sb.Append(text, pos, text.Length - pos);
        string revisedText = sb.ToString();
        // The prompt holds no valenced word, so it survives revision unchanged.
        var revised = review with { Text = revisedText, Words = Lexicon.Annotate(revisedText) };
        return new RevisionPair(review, revised, towardPositive, changed);
    }

    /// <summary>
    /// Preference pairs from revisions: for each review that has a wrong-sign word, the revision toward positive is
    /// chosen and the original rejected (or the reverse when <paramref name="preferPositive"/> is false). Reviews with
    /// nothing to revise are skipped. Both completions share the review's prompt.
    /// </summary>
    public static IEnumerable<PreferencePair> PreferencePairs(IEnumerable<Review> reviews, bool preferPositive = true)
    {
        foreach (var r in reviews)
        {
            var pair = Revise(r, preferPositive);
            if (pair.ChangedWords == 0) continue;
            yield return new PreferencePair(r.Prompt, pair.Revised.Completion, r.Completion,
                pair.Revised.TrueReward, r.TrueReward);
        }
    }

    internal static string Article(string nextWord) => "aeiou".Contains(char.ToLowerInvariant(nextWord[0])) ? "an" : "a";

    internal static string Capitalize(string w) => w.Length == 0 ? w : char.ToUpperInvariant(w[0]) + w[1..];
}
