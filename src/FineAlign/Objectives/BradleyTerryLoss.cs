// Bradley–Terry reward-model loss (Ouyang et al. 2022, "Training language models to follow instructions"; TRL reward_trainer.py).
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>
/// Pairwise reward-model loss: L = −log σ(r_w − r_l − m) [+ c·(r_w + r_l)²], averaged over pairs.
/// Metrics: "accuracy" = mean[r_w &gt; r_l] (ties count as wrong), "margin" = mean(r_w − r_l).
/// </summary>
public static class BradleyTerryLoss
{
    /// <param name="chosenRewards">r_w, [B] scalar rewards of the preferred responses.</param>
    /// <param name="rejectedRewards">r_l, [B].</param>
    /// <param name="margin">m, optional per-pair margin [B] (no gradient flows into it); null = 0.</param>
    /// <param name="centerCoefficient">c ≥ 0 for the centring term c·(r_w + r_l)² (TRL
    /// center_rewards_coefficient, e.g. 0.01); 0 = off.</param>
    public static ObjectiveResult Compute(Tensor chosenRewards, Tensor rejectedRewards, Tensor? margin = null,
                                         double centerCoefficient = 0)
    {
        ObjectiveChecks.NonNegative(centerCoefficient, "center coefficient");
        using var scope = NewDisposeScope();
        var rw = ObjectiveChecks.Vector(chosenRewards, "chosen rewards");
        long b = rw.shape[0];
        ObjectiveChecks.NonEmpty(b, "Bradley–Terry loss");
        var rl = ObjectiveChecks.Vector(rejectedRewards, "rejected rewards", b);

        var diff = rw - rl;
        var logits = margin is null ? diff : diff - ObjectiveChecks.Vector(margin, "margin", b).detach();
        var losses = F.logsigmoid(logits).neg();
        if (centerCoefficient > 0) losses = losses + centerCoefficient * (rw + rl).square();
        var loss = losses.mean();

        var metrics = new Dictionary<string, double>
        {
            ["accuracy"] = ObjectiveChecks.Mean(diff.gt(0).to(ScalarType.Float32)),
            ["margin"] = ObjectiveChecks.Mean(diff),
        };
        return new ObjectiveResult(loss.MoveToOuterDisposeScope(), losses.MoveToOuterDisposeScope(), metrics);
    }
}
