using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Evaluation;

/// <summary>
/// Preference accuracy on held-out pairs: the share of pairs whose chosen response scores strictly higher
/// (ties count as wrong, so an untrained policy equal to its reference scores 0, not 50%). Chance is 50%.
/// </summary>
public sealed record PreferenceAccuracy(int Pairs, double Accuracy, double MeanMargin, double MeanChosen, double MeanRejected)
{
    /// <summary>Half-width of the 95% normal interval of the accuracy.</summary>
    public double ConfidenceHalfWidth => 1.96 * Math.Sqrt(Accuracy * (1 - Accuracy) / Math.Max(1, Pairs));

    /// <summary>Per pair, in input order: did the chosen response score strictly higher?</summary>
    public IReadOnlyList<bool> Correct { get; init; } = [];
}

/// <summary>
/// Accuracy where length cannot decide. <see cref="Similar"/>: the pairs whose completions differ in length by at most
/// a share of the longer one (tokens the scorer saw, so two replies both cut at --max-length count as equal), with the
/// "shorter wins" rule's accuracy on the same pairs. <see cref="Balanced"/>: the mean of the accuracies on the pairs
/// where the chosen completion is strictly shorter and on those where it is strictly longer, so "shorter wins" and
/// "longer wins" both score 50% on it; pairs of equal length (<see cref="Equal"/>) are left out of it, since a rule
/// that breaks length ties at random would score above 50% if they were counted with either side.
/// </summary>
public sealed record LengthControlled(double SimilarWithin, int SimilarPairs, double Similar, double SimilarShorterWins,
    int ShorterChosenPairs, double ShorterChosen, int LongerChosenPairs, double LongerChosen, int EqualPairs, double Equal)
{
    /// <summary>Half-width of the 95% normal interval of <see cref="Similar"/>.</summary>
    public double SimilarHalfWidth => 1.96 * Math.Sqrt(Similar * (1 - Similar) / Math.Max(1, SimilarPairs));

    /// <summary>Mean of the two strict strata's accuracies (NaN when one stratum is empty).</summary>
    public double Balanced => ShorterChosenPairs == 0 || LongerChosenPairs == 0 ? double.NaN : (ShorterChosen + LongerChosen) / 2;

    /// <summary>Half-width of the 95% interval of <see cref="Balanced"/>: 1.96·√(p₁(1−p₁)/n₁ + p₂(1−p₂)/n₂)/2.</summary>
    public double BalancedHalfWidth => 1.96 * Math.Sqrt(ShorterChosen * (1 - ShorterChosen) / Math.Max(1, ShorterChosenPairs)
                                                        + LongerChosen * (1 - LongerChosen) / Math.Max(1, LongerChosenPairs)) / 2;
}

/// <summary>
/// The length baseline of a preference set — the first thing a reviewer asks: the accuracy of "the shorter reply
/// wins" and of "the longer reply wins" (completion tokens; equal lengths count as wrong for both, like ties above).
/// A learned score that does not beat the better of the two may have learned length.
/// </summary>
public sealed record LengthBaseline(int Pairs, double ShorterWins, double LongerWins)
{
    public double Ties => 1 - ShorterWins - LongerWins;
    public double Best => Math.Max(ShorterWins, LongerWins);

    /// <summary>
    /// The better length rule's expected accuracy when length ties are decided by a coin: the fair bar for a learned
    /// score, which can get tied pairs right (with replies cut at --max-length, ties are common).
    /// </summary>
    public double BestWithCoinTies => Best + Ties / 2;
}

public static class PreferenceEval
{
    /// <summary>"Shorter wins" and "longer wins" accuracies over <paramref name="pairs"/>.</summary>
    public static LengthBaseline Length(IReadOnlyList<EncodedPair> pairs)
    {
        if (pairs.Count == 0) throw new FineAlignException("no preference pairs to evaluate");
        int shorter = pairs.Count(p => p.Chosen.Completion.Length < p.Rejected.Completion.Length);
        int longer = pairs.Count(p => p.Chosen.Completion.Length > p.Rejected.Completion.Length);
        return new LengthBaseline(pairs.Count, (double)shorter / pairs.Count, (double)longer / pairs.Count);
    }

    /// <summary>
    /// The length-controlled accuracies of <paramref name="accuracy"/> (which must carry its per-pair results) over the
    /// same <paramref name="pairs"/>; "similar" means |len(chosen) − len(rejected)| ≤ <paramref name="similarWithin"/> · the longer.
    /// </summary>
    public static LengthControlled LengthControl(IReadOnlyList<EncodedPair> pairs, PreferenceAccuracy accuracy, double similarWithin = 0.1)
    {
        var correct = accuracy.Correct;
        if (correct.Count != pairs.Count)
            throw new ArgumentException($"{correct.Count} per-pair results for {pairs.Count} pairs: score the same pairs", nameof(accuracy));
        int similar = 0, similarRight = 0, similarShorter = 0, shorter = 0, shorterRight = 0, longer = 0, longerRight = 0, equal = 0, equalRight = 0;
        for (int i = 0; i < pairs.Count; i++)
        {
            int c = pairs[i].Chosen.Completion.Length, r = pairs[i].Rejected.Completion.Length;
            if (Math.Abs(c - r) <= similarWithin * Math.Max(c, r))
            {
                similar++;
                if (correct[i]) similarRight++;
                if (c < r) similarShorter++;
            }
            if (c < r) { shorter++; if (correct[i]) shorterRight++; }
            else if (c > r) { longer++; if (correct[i]) longerRight++; }
            else { equal++; if (correct[i]) equalRight++; }
        }
        static double Share(int k, int n) => n == 0 ? double.NaN : (double)k / n;
        return new LengthControlled(similarWithin, similar, Share(similarRight, similar), Share(similarShorter, similar),
            shorter, Share(shorterRight, shorter), longer, Share(longerRight, longer), equal, Share(equalRight, equal));
    }

    /// <summary>Scores of a sequence reward model: r(x, y_w) vs r(x, y_l).</summary>
    public static PreferenceAccuracy RewardModel(ScoredLM rewardModel, IReadOnlyList<EncodedPair> pairs, int padId, int batchSize = 32)
        => Run(pairs, padId, batchSize, rewardModel, b => rewardModel.SequenceScores(b.Tokens.InputIds, b.Tokens.AttentionMask));

    /// <summary>DPO's implicit reward β(log π(y|x) − log π_ref(y|x)) of a policy against its reference.</summary>
    public static PreferenceAccuracy ImplicitReward(CausalLM policy, CausalLM reference, IReadOnlyList<EncodedPair> pairs, int padId, double beta, int batchSize = 32)
        => Run(pairs, padId, batchSize, policy, b =>
            beta * (SequenceLogProbs.OfFrozen(policy, b.Tokens) - SequenceLogProbs.OfFrozen(reference, b.Tokens)));

    /// <summary>Reference-free baseline: does the model give the chosen completion a higher log-likelihood?</summary>
    public static PreferenceAccuracy LogLikelihood(CausalLM model, IReadOnlyList<EncodedPair> pairs, int padId, int batchSize = 32)
        => Run(pairs, padId, batchSize, model, b => SequenceLogProbs.OfFrozen(model, b.Tokens));

    private static PreferenceAccuracy Run(IReadOnlyList<EncodedPair> pairs, int padId, int batchSize, nn.Module model, Func<PairBatch, Tensor> score)
    {
        if (pairs.Count == 0) throw new FineAlignException("no preference pairs to evaluate");
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            int correct = 0;
            var right = new bool[pairs.Count];
            double margin = 0, chosen = 0, rejected = 0;
            for (int start = 0; start < pairs.Count; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var idx = Enumerable.Range(start, Math.Min(batchSize, pairs.Count - start)).ToArray();
                using var b = PreferenceBatching.Pairs(pairs, idx, padId);
                var s = score(b).to(ScalarType.Float64).data<double>().ToArray();
                for (int k = 0; k < idx.Length; k++)
                {
                    double c = s[k], r = s[idx.Length + k];
                    if (c > r) { correct++; right[idx[k]] = true; }
                    margin += c - r; chosen += c; rejected += r;
                }
            }
            int n = pairs.Count;
            return new PreferenceAccuracy(n, (double)correct / n, margin / n, chosen / n, rejected / n) { Correct = right };
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
