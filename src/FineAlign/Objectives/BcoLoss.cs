// Binary Classifier Optimization (Jung et al. 2024, arXiv 2404.04656); cross-checked with TRL experimental/bco.
using System.Text.Json;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>
/// The BCO reward shift δ: the running mean of the implicit rewards of every example seen so far
/// (thumbs-up and thumbs-down together). A value: <see cref="BcoLoss.Compute"/> takes one and returns the next.
/// Save it with checkpoints and load it on resume, or δ restarts.
/// </summary>
public sealed record RewardShift(double Mean = 0, long Count = 0)
{
    public const string FileName = "bco_reward_shift.json";

    /// <summary>This shift merged with a batch given by its mean and size (Chan et al.'s pairwise update, mean part).</summary>
    public RewardShift Merge(double batchMean, long batchCount)
    {
        if (batchCount < 0) throw new FineAlignException($"reward shift batch count must be ≥ 0, got {batchCount}");
        if (batchCount == 0) return this;
        if (!double.IsFinite(batchMean)) throw new FineAlignException($"reward shift got a non-finite batch mean {batchMean}");
        long total = Count + batchCount;
        return new RewardShift(Mean + (batchMean - Mean) * batchCount / total, total);
    }

    /// <summary>This shift merged with every element of <paramref name="rewards"/> (any shape; read detached).</summary>
    public RewardShift Merge(Tensor rewards)
    {
        using var scope = NewDisposeScope();
        long n = rewards.numel();
        return n == 0 ? this : Merge(rewards.detach().to(ScalarType.Float64).mean().item<double>(), n);
    }

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this));

    public static RewardShift Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<RewardShift>(File.ReadAllText(path))
                   ?? throw new FineAlignException($"{path}: empty reward shift file");
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{path}: not a reward shift file ({e.Message})", e);
        }
    }
}

/// <summary>BCO's loss and the reward shift after this batch (the δ to pass to the next one).</summary>
public sealed record BcoLossResult(ObjectiveResult Objective, RewardShift Shift);

/// <summary>
/// BCO: implicit reward r = βΔ(y), Δ = log π(y|x) − log π_ref(y|x); a binary classifier with
/// logit r − δ. thumbs-up: −log σ(r − δ); thumbs-down: −log σ(−(r − δ)); optional per-example
/// weights (UDM, see <see cref="Udm"/>); averaged over the batch.
/// Metrics: "delta" = δ used; rewards/chosen, rewards/rejected = mean r over thumbs-up / thumbs-down
/// examples (0 when a side is absent); logps/chosen, logps/rejected likewise for log π(y|x).
/// </summary>
public static class BcoLoss
{
    public const double DefaultBeta = 0.1;

    /// <param name="policyLogps">log π(y|x), [B], carries the gradient.</param>
    /// <param name="referenceLogps">log π_ref(y|x), [B].</param>
    /// <param name="thumbsUp">[B] bool (or 0/1).</param>
    /// <param name="shift">δ's running state before this batch; this batch's rewards are merged into it BEFORE the loss
    /// is computed, and the merged shift is returned (the input is not changed).</param>
    /// <param name="beta">β &gt; 0.</param>
    /// <param name="weights">Optional per-example loss weights [B] (e.g. <see cref="Udm.Weights"/>), detached.</param>
    /// <param name="updateShift">false (evaluation) reads δ without merging this batch into it (the same shift is returned).</param>
    public static BcoLossResult Compute(Tensor policyLogps, Tensor referenceLogps, Tensor thumbsUp, RewardShift shift,
                                         double beta = DefaultBeta, Tensor? weights = null, bool updateShift = true)
    {
        ObjectiveChecks.Positive(beta, "BCO beta");
        using var scope = NewDisposeScope();
        var pol = ObjectiveChecks.Vector(policyLogps, "policy log-probs");
        long b = pol.shape[0];
        ObjectiveChecks.NonEmpty(b, "BCO loss");
        var refr = ObjectiveChecks.Vector(referenceLogps, "reference log-probs", b).detach();
        var up = ObjectiveChecks.Labels(thumbsUp, "thumbs-up labels", b);

        var rewards = beta * (pol - refr);
        var next = updateShift ? shift.Merge(rewards) : shift;
        double delta = next.Mean;
        var logits = rewards - delta;
        var losses = where(up, F.logsigmoid(logits).neg(), F.logsigmoid(logits.neg()).neg());
        if (weights is not null)
        {
            var w = ObjectiveChecks.Vector(weights, "BCO weights", b).detach();
            if (w.lt(0).any().item<bool>()) throw new FineAlignException("BCO weights must be non-negative");
            losses = losses * w;
        }
        var loss = losses.mean();

        var down = up.logical_not();
        var metrics = new Dictionary<string, double>
        {
            ["delta"] = delta,
            ["rewards/chosen"] = ObjectiveChecks.MaskedMean(rewards, up),
            ["rewards/rejected"] = ObjectiveChecks.MaskedMean(rewards, down),
            ["logps/chosen"] = ObjectiveChecks.MaskedMean(pol, up),
            ["logps/rejected"] = ObjectiveChecks.MaskedMean(pol, down),
        };
        return new BcoLossResult(new ObjectiveResult(loss.MoveToOuterDisposeScope(), losses.MoveToOuterDisposeScope(), metrics), next);
    }
}
