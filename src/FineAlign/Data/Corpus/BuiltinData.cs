using FineAlign.Text;

namespace FineAlign.Data.Corpus;

/// <summary>
/// The toy world's one door: every adaptation of the built-in review corpus (<see cref="ReviewCorpus"/>, its ground
/// truth <see cref="Lexicon"/>) into the library's data types — SFT pairs, pretraining blocks, preference pairs,
/// unpaired feedback, offline-RL examples and revision pairs — each split by held-out prompts
/// (<see cref="ReviewCorpus.IsEvalPrompt"/>). Nothing outside Data/Corpus reads the corpus except through here and
/// <see cref="ReviewCorpus.Prompts(int, int, double)"/>.
/// </summary>
public static class BuiltinData
{
    public const string Name = "<built-in corpus>";

    /// <summary>Prompt = review opening, completion = the rest; eval = reviews whose opening is held out.</summary>
    public static (List<SftExample> Train, List<SftExample> Eval) SftExamples(int seed, int count, double evalFraction = 0.1)
    {
        var train = new List<SftExample>();
        var eval = new List<SftExample>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
        {
            var ex = new PromptCompletionExample(r.Index + 1, r.Prompt, r.Completion);
            (ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction) ? eval : train).Add(ex);
        }
        return (train, eval);
    }

    /// <summary>Whole reviews as documents, packed into blocks of <paramref name="contextLength"/> tokens.</summary>
    public static (List<TokenizedExample> Train, List<TokenizedExample> Eval) PretrainBlocks(TextTokenizer tokenizer, int seed, int count, int contextLength, double evalFraction = 0.1)
    {
        var train = new List<TokenizedExample>();
        var eval = new List<TokenizedExample>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
            (ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction) ? eval : train).Add(PretrainCorpus.EncodeDocument(tokenizer, r.Text));
        int eos = tokenizer.EosId ?? throw new FineAlignException("the tokenizer has no EOS token to separate packed documents.");
        return (Packing.Pack(train, contextLength, eos), Packing.Pack(eval, contextLength, eos));
    }

    /// <summary>Preference pairs (prompt, chosen, rejected) split by held-out prompts; line numbers are review numbers.</summary>
    public static (List<PreferenceExample> Train, List<PreferenceExample> Eval) PreferencePairs(int seed, int count, double evalFraction = 0.1)
    {
        var train = new List<PreferenceExample>();
        var eval = new List<PreferenceExample>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
            foreach (var p in ReviewCorpus.PreferencePairs([r]))
                (ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction) ? eval : train).Add(new PreferenceExample(r.Index + 1, PreferenceFormat.PromptChosenRejected,
                    new PromptCompletionExample(r.Index + 1, p.Prompt, p.Chosen), new PromptCompletionExample(r.Index + 1, p.Prompt, p.Rejected)));
        return (train, eval);
    }

    /// <summary>Each pair as two unpaired feedback examples (chosen 👍, rejected 👎), as KTO/BCO read unpaired preferences.</summary>
    public static IEnumerable<FeedbackExample> Unpair(IEnumerable<PreferenceExample> pairs) =>
        pairs.SelectMany(p => new[]
        {
            new FeedbackExample(p.Line, FeedbackFormat.UnpairedPreferences, p.Chosen, true),
            new FeedbackExample(p.Line, FeedbackFormat.UnpairedPreferences, p.Rejected, false),
        });

    /// <summary>A revision pair: a review and its minimal antonym edit toward positive (TLCR's corrections).</summary>
    public sealed record RevisionPair(string Prompt, string Original, string Revised, bool IsEval);

    /// <summary>
    /// Every review revised toward positive (the preferred direction, like TLCR's corrections of rejected responses):
    /// +1 then always means "what the reviser wrote" = positive sentiment. Mixing directions would give the same word
    /// opposite labels. Reviews with nothing to revise are skipped.
    /// </summary>
    public static List<RevisionPair> RevisionPairs(int seed, int count, double evalFraction = 0.1)
    {
        var list = new List<RevisionPair>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
        {
            var pair = ReviewCorpus.Revise(r, towardPositive: true);
            if (pair.ChangedWords == 0) continue;
            list.Add(new RevisionPair(r.Prompt, r.Completion, pair.Revised.Completion, ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction)));
        }
        return list;
    }

    /// <summary>The outcome of <see cref="OfflineExamples"/>.</summary>
    public sealed record OfflineSet(List<OfflineExample> Train, List<OfflineExample> Eval, int Mislabelled, int Negative);

    /// <summary>
    /// The built-in offline set: corpus reviews split into opening (prompt) and rest (response), rewarded with the ground
    /// truth <see cref="Lexicon.TrueReward"/> of the response. <c>noiseFraction</c> relabels that share of the
    /// negative responses (true reward &lt; 0) with <c>noiseReward</c> — mislabelled data for the robustness test.
    /// </summary>
    public static OfflineSet OfflineExamples(int seed, int count, double noiseFraction = 0, double noiseReward = 1.0, double evalFraction = 0.1)
    {
        if (noiseFraction is < 0 or > 1 || double.IsNaN(noiseFraction)) throw new FineAlignException($"noise fraction must be in [0, 1], got {noiseFraction}");
        var train = new List<OfflineExample>();
        var eval = new List<OfflineExample>();
        var rng = new Random(seed ^ 0x5eed);
        int mislabelled = 0, negative = 0;
        foreach (var r in ReviewCorpus.Generate(seed, count))
        {
            double truth = Lexicon.TrueReward(r.Completion);
            bool isEval = ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction);
            double reward = truth;
            if (!isEval && truth < 0)
            {
                negative++;
                if (rng.NextDouble() < noiseFraction) { reward = noiseReward; mislabelled++; }
            }
            (isEval ? eval : train).Add(new OfflineExample(r.Index + 1, new PromptCompletionExample(r.Index + 1, r.Prompt, r.Completion), reward));
        }
        return new OfflineSet(train, eval, mislabelled, negative);
    }
}
