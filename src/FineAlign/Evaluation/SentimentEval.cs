using FineAlign.Data.Corpus;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Evaluation;

/// <summary>Generations of a policy on held-out prompts, scored with the corpus's known word valences.</summary>
public sealed record SentimentEvalResult(double TrueReward, double KlToInitial, double Distinct1, double Distinct2, double MeanLength, int Samples)
{
    /// <summary>The generated responses, in prompt order (for sample tables and standard errors).</summary>
    [System.Text.Json.Serialization.JsonIgnore] public IReadOnlyList<string> Texts { get; init; } = [];
    /// <summary>True reward of each response in <see cref="Texts"/>.</summary>
    [System.Text.Json.Serialization.JsonIgnore] public IReadOnlyList<double> Rewards { get; init; } = [];
}

/// <summary>
/// Ground-truth evaluation on the built-in corpus: sample one response per prompt (T = 1, seeded), score it with
/// <see cref="Lexicon.TrueReward"/>, estimate KL(π ‖ π_init) per sequence as the mean of Σ_t (log π − log π_init)
/// over the samples (k1, unbiased), and measure diversity as distinct-n over word n-grams.
/// </summary>
public static class SentimentEval
{
    public static SentimentEvalResult Run(CausalLM policy, CausalLM initial, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        int maxNewTokens, long seed, int batchSize = 32)
    {
        var texts = new List<string>();
        var rewards = new List<double>();
        double rewardSum = 0, klSum = 0, lenSum = 0;
        for (int s = 0; s < prompts.Count; s += batchSize)
        {
            var chunk = prompts.Skip(s).Take(batchSize).ToList();
            var gen = TextGenerator.Generate(policy, tokenizer, chunk, new GenerationOptions { MaxNewTokens = maxNewTokens, Temperature = 1.0, Seed = seed + s });
            using var scope = NewDisposeScope();
            var rollout = RolloutBatch.From(gen, chunk, tokenizer.PaddingId);
            using (no_grad())
            {
                policy.eval(); initial.eval();
                var lp = rollout.ResponseLogProbs(policy.Forward(rollout.InputIds, rollout.AttentionMask), 1.0);
                var lq = rollout.ResponseLogProbs(initial.Forward(rollout.InputIds, rollout.AttentionMask), 1.0);
                klSum += (Kl.PerToken(lp, lq, rollout.ResponseMask) ).sum().item<float>();
                lenSum += rollout.ResponseMask.sum().item<float>();
            }
            for (int i = 0; i < gen.Count; i++)
            {
                texts.Add(gen[i].Text);
                rewards.Add(Lexicon.TrueReward(gen[i].Text));
                rewardSum += rewards[^1];
            }
        }
        int n = Math.Max(1, prompts.Count);
        return new SentimentEvalResult(rewardSum / n, klSum / n, DistinctN(texts, 1), DistinctN(texts, 2), lenSum / n, prompts.Count)
        {
            Texts = texts, Rewards = rewards,
        };
    }

    /// <summary>Distinct word n-grams / all word n-grams over the texts (Li et al. 2016); 0 when there are none.</summary>
    public static double DistinctN(IEnumerable<string> texts, int n)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long total = 0;
        foreach (var t in texts)
        {
            var words = t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            for (int i = 0; i + n <= words.Length; i++) { seen.Add(string.Join(' ', words, i, n)); total++; }
        }
        return total == 0 ? 0 : (double)seen.Count / total;
    }
}
