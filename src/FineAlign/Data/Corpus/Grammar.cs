using System.Text;

namespace FineAlign.Data.Corpus;

/// <summary>The probabilistic review grammar behind <see cref="ReviewCorpus"/>; one instance builds one review.</summary>
internal sealed class Grammar
{
    internal static readonly string[] Films = Nouns("film movie picture feature thriller comedy drama documentary sequel remake western musical romance");
    internal static readonly string[] AspectsSingular = Nouns("plot story script screenplay acting ending soundtrack dialogue pacing direction cinematography music score editing premise atmosphere humor tone cast lighting setting climax twist finale opening animation");
    internal static readonly string[] AspectsPlural = Nouns("characters actors visuals effects performances costumes songs jokes scenes sets");
    internal static readonly string[] People = Nouns("lead star actor actress villain hero cast");
    internal static readonly string[] Companions = Nouns("friends family wife husband kids partner brother sister parents");
    internal static readonly string[] When = ["", "last night", "yesterday", "last weekend", "on Sunday", "at home", "at the cinema", "at the theater", "again"];
    internal static readonly string[] Tails = ["", "", "", " from start to finish", " throughout", " in every scene", " for the whole film", " most of the time"];
    internal static readonly string[] Intensifiers = ["very", "really", "truly", "extremely", "incredibly", "absolutely", "utterly", "so", "remarkably", "genuinely"];
    internal static readonly string[] Downtoners = ["somewhat", "slightly", "mildly", "fairly", "quite", "rather"];
    internal static readonly string[] NounIntensifiers = ["real", "complete", "total", "absolute"];

    internal static readonly LexiconEntry[] Adjectives = Lexicon.OfClass(WordClass.Adjective).ToArray();
    internal static readonly LexiconEntry[] PredicateNouns = Lexicon.OfClass(WordClass.PredicateNoun).ToArray();
    internal static readonly LexiconEntry[] SentenceAdverbs = Lexicon.OfClass(WordClass.SentenceAdverb).ToArray();
    internal static readonly LexiconEntry[] PastVerbs = Verbs(past: true);
    internal static readonly LexiconEntry[] BaseVerbs = Verbs(past: false);

    private readonly CorpusRandom _rng;
    private readonly float _polarity;
    private readonly StringBuilder _text = new(400);

    public Grammar(CorpusRandom rng, float polarity) { _rng = rng; _polarity = polarity; }

    public string Text => _text.ToString();

    /// <summary>Writes the opening sentence and returns the prompt: its prefix before the first sentiment slot.</summary>
    public string Opening()
    {
        string film = Pick(Films);
        double t = Target();
        string prompt, rest;
        switch (_rng.Next(10))
        {
            case 0: prompt = $"The {film} was"; rest = AdjPhrase(t, allowNegation: true) + "."; break;
            case 1:
                string when = Pick(When);
                prompt = when.Length == 0 ? $"I watched this {film} and" : $"I watched this {film} {when} and";
                rest = "I " + VerbPhrase(t) + " it."; break;
            case 2: prompt = $"This {film} is"; rest = AdjPhrase(t, allowNegation: true) + "."; break;
            case 3: prompt = $"I went to see this {film} with my {Pick(Companions)} and it was"; rest = AdjPhrase(t, allowNegation: true) + "."; break;
            case 4:
                string seen = Pick(When);
                prompt = seen.Length == 0 ? $"I saw this {film}. What" : $"I saw this {film} {seen}. What";
                string adj = AdjPhrase(t, allowNegation: false);
                rest = $"{ReviewCorpus.Article(adj)} {adj} {film} it was!"; break;
            case 5: prompt = $"I just saw this {film} and it was"; rest = AdjPhrase(t, allowNegation: true) + "."; break;
            case 6: prompt = $"The {film} felt"; rest = AdjPhrase(t, allowNegation: true) + " from start to finish."; break;
            case 7: prompt = $"My {Pick(Companions)} and I"; rest = VerbPhrase(t) + $" this {film}."; break;
            case 8: prompt = $"I had high hopes for this {film}, and it was"; rest = AdjPhrase(t, allowNegation: true) + "."; break;
            default:
                var (aspect, plural) = Aspect();
                prompt = $"The {aspect} of this {film} {(plural ? "were" : "was")}";
                rest = AdjPhrase(t, allowNegation: true) + "."; break;
        }
        _text.Append(prompt).Append(' ').Append(rest);
        return prompt;
    }

    /// <summary>Appends one body sentence.</summary>
    public void Body()
    {
        double t = _rng.Chance(0.12) ? -0.6 * _polarity + 0.3 * _rng.NextGaussian() : Target();
        var (aspect, plural) = Aspect();
        bool present = _rng.Chance(0.25);
        string s;
        switch (_rng.Next(10))
        {
            case 0: s = $"the {aspect} {Predicate(plural, present, t)}{Pick(Tails)}."; break;
            case 1:
                var (other, _) = Aspect();
                if (other == aspect) goto case 0;
                s = $"the {aspect} and the {other} {(present ? "are" : "were")} {AdjPhrase(t, allowNegation: false)}."; break;
            case 2: s = $"I {VerbPhrase(t)} the {aspect}{Pick(Tails[..5])}."; break;
            case 3:
                var (second, plural2) = Aspect();
                if (second == aspect) goto case 0;
                double contrast = -0.6 * _polarity + 0.3 * _rng.NextGaussian();
                s = $"the {aspect} {Predicate(plural, present, t)}, but the {second} {Predicate(plural2, present, contrast)}."; break;
            case 4: s = $"{PickNear(SentenceAdverbs, t, 1f)}, the {aspect} {Predicate(plural, present, t)}."; break;
            case 5:
                if (_rng.Chance(0.3)) s = $"the actors gave {AdjPhrase(t, allowNegation: false)} performances.";
                else
                {
                    string adj = AdjPhrase(t, allowNegation: false);
                    s = $"the {Pick(People)} gave {ReviewCorpus.Article(adj)} {adj} performance.";
                }
                break;
            case 6:
                string noun = _rng.Chance(0.3) ? $"{Pick(NounIntensifiers)} {PickNear(PredicateNouns, t, 1.5f)}" : PickNear(PredicateNouns, t, 1f);
                s = $"it {(present ? "is" : "was")} {ReviewCorpus.Article(noun)} {noun}."; break;
            case 7:
                if (t > 0.2) s = _rng.Chance(0.5) ? "I would recommend it to everyone." : $"I would {Pick(Intensifiers[..3])} recommend it.";
                else if (t < -0.2) s = Pick(["I would not recommend it.", "I wouldn't recommend it to anyone.", "I would never recommend it."]);
                else goto case 0;
                break;
            case 8:
                string a1 = AdjPhrase(t, allowNegation: false), a2 = PickNear(Adjectives, t, 1f);
                if (a2 == a1) goto case 0;
                s = $"the {aspect} {(plural ? (present ? "are" : "were") : (present ? "is" : "was"))} {a1} and {a2}."; break;
            default: s = $"I found the {aspect} {AdjPhrase(t, allowNegation: false)}{Pick(Tails)}."; break;
        }
        _text.Append(' ').Append(ReviewCorpus.Capitalize(s));
    }

    /// <summary>Appends the closing rating sentence (digits are not words, so it adds no valence).</summary>
    public void Rating(int stars)
    {
        string s = _rng.Next(5) switch
        {
            0 => $"I give it {stars} out of 5 stars.",
            1 => $"Rating: {stars}/5.",
            2 => $"Overall, {stars} out of 5.",
            3 => $"{stars} {(stars == 1 ? "star" : "stars")} out of 5.",
            _ => $"Overall, I would rate it {stars} out of 5.",
        };
        _text.Append(' ').Append(s);
    }

    // ---- slots ----------------------------------------------------------------------------------

    private double Target() => Math.Clamp(_polarity + 0.3 * _rng.NextGaussian(), -1.0, 1.0);

    private (string Word, bool Plural) Aspect() =>
        _rng.Chance(0.25) ? (Pick(AspectsPlural), true) : (Pick(AspectsSingular), false);

    /// <summary>"was [not] [very] good" / "wasn't good" / "is brilliant" with number/tense agreement.</summary>
    private string Predicate(bool plural, bool present, double t)
    {
        string be = plural ? (present ? "are" : "were") : (present ? "is" : "was");
        if (_rng.Chance(0.15))
        {
            string neg = _rng.Chance(0.5) ? be + " not" : be + "n't";
            return $"{neg} {Adjective(t, negated: true)}";
        }
        return $"{be} {Adjective(t, negated: false)}";
    }

    /// <summary>An adjective phrase ("[not] [very] good"); negation only where the copula precedes.</summary>
    private string AdjPhrase(double t, bool allowNegation)
    {
        bool negated = allowNegation && _rng.Chance(0.15);
        return negated ? "not " + Adjective(t, negated: true) : Adjective(t, negated: false);
    }

    /// <summary>"[modifier] adjective" chosen so its effective valence (with the negation already written) is near t.</summary>
    private string Adjective(double t, bool negated)
    {
        float neg = negated ? Lexicon.NegationFactor : 1f;
        double r = _rng.NextDouble();
        if (r < 0.2 && Math.Abs(t) > 0.5)
        {
            string m = Pick(Intensifiers);
            return $"{m} {PickNear(Adjectives, t, neg * Lexicon.Find(m)!.Factor)}";
        }
        if (r < 0.3 && Math.Abs(t) < 0.5)
        {
            string m = Pick(Downtoners);
            return $"{m} {PickNear(Adjectives, t, neg * Lexicon.Find(m)!.Factor)}";
        }
        return PickNear(Adjectives, t, neg);
    }

    /// <summary>"loved" / "really enjoyed" / "didn't enjoy" / "never liked".</summary>
    private string VerbPhrase(double t)
    {
        double r = _rng.NextDouble();
        if (r < 0.15) return "didn't " + PickNear(BaseVerbs, t, Lexicon.NegationFactor);
        if (r < 0.3 && Math.Abs(t) > 0.5)
        {
            string m = Pick(Intensifiers[..3]);
            return $"{m} {PickNear(PastVerbs, t, Lexicon.Find(m)!.Factor)}";
        }
        return PickNear(PastVerbs, t, 1f);
    }

    /// <summary>
    /// Samples a word with probability ∝ 1 / (1 + (d/0.2)²)², d = clamp(valence × factor) − t: a heavy-tailed kernel
    /// built from + × / only, so choices are bit-identical on every platform (no exp).
    /// </summary>
    private string PickNear(IReadOnlyList<LexiconEntry> candidates, double t, float factor)
    {
        Span<double> w = stackalloc double[candidates.Count];
        double total = 0;
        for (int i = 0; i < candidates.Count; i++)
        {
            double d = (Math.Clamp(candidates[i].Valence * factor, -1f, 1f) - t) / 0.2;
            double k = 1.0 / (1.0 + d * d);
            total += w[i] = k * k;
        }
        double u = _rng.NextDouble() * total;
        for (int i = 0; i < candidates.Count; i++)
            if ((u -= w[i]) < 0) return candidates[i].Word;
        return candidates[^1].Word;
    }

    private string Pick(IReadOnlyList<string> items) => items[_rng.Next(items.Count)];

    private static string[] Nouns(string words) => words.Split(' ');

    private static LexiconEntry[] Verbs(bool past) =>
        Lexicon.OfClass(WordClass.Verb).Where(e => e.Word.EndsWith("ed", StringComparison.Ordinal) == past && !e.Word.StartsWith("recommend", StringComparison.Ordinal)).ToArray();
}
