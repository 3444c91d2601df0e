// Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) and its variants; cross-checked with TRL dpo_trainer.py.
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>The DPO-family loss applied to h = Δ(y_w) − Δ(y_l).</summary>
public enum DpoLossType
{
    /// <summary>−log σ(βh) (Rafailov et al. 2023).</summary>
    Sigmoid,
    /// <summary>(h̄ − 1/(2β))² with length-averaged log-ratios (Azar et al. 2023, arXiv 2310.12036).</summary>
    Ipo,
    /// <summary>max(0, 1 − βh) (SLiC, Zhao et al. 2023, arXiv 2305.10425).</summary>
    Hinge,
    /// <summary>[−(1−ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε) (Chowdhury et al. 2024, arXiv 2403.00409).</summary>
    Robust,
    /// <summary>−(1−ε) log σ(βh) − ε log σ(−βh) (label smoothing, Mitchell 2023).</summary>
    Conservative,
}

/// <summary>
/// DPO losses on sequence log-prob sums (see <see cref="CausalLmLoss.SequenceLogProbs"/>).
/// Δ(y) = log π(y|x) − log π_ref(y|x); h = Δ(y_w) − Δ(y_l).
/// Metrics (batch means, TRL names): rewards/chosen = βΔ(y_w), rewards/rejected = βΔ(y_l),
/// rewards/margins = their difference, rewards/accuracies = mean[margin &gt; 0],
/// logps/chosen and logps/rejected = the policy's log π(y|x).
/// </summary>
public static class DpoLoss
{
    public const double DefaultBeta = 0.1;

    /// <param name="policyChosen">log π(y_w|x), [B], carries the gradient.</param>
    /// <param name="policyRejected">log π(y_l|x), [B].</param>
    /// <param name="referenceChosen">log π_ref(y_w|x), [B] (detached here).</param>
    /// <param name="referenceRejected">log π_ref(y_l|x), [B] (detached here).</param>
    /// <param name="beta">β &gt; 0.</param>
    /// <param name="lossType">Which member of the family.</param>
    /// <param name="labelSmoothing">ε: 0 ≤ ε ≤ 0.5 for Conservative, 0 ≤ ε &lt; 0.5 for Robust, must be 0 otherwise.</param>
    /// <param name="chosenLengths">|y_w| in tokens, [B]; required for Ipo only.</param>
    /// <param name="rejectedLengths">|y_l| in tokens, [B]; required for Ipo only.</param>
    public static ObjectiveResult Compute(Tensor policyChosen, Tensor policyRejected, Tensor referenceChosen, Tensor referenceRejected,
                                         double beta = DefaultBeta, DpoLossType lossType = DpoLossType.Sigmoid, double labelSmoothing = 0,
                                         Tensor? chosenLengths = null, Tensor? rejectedLengths = null)
    {
        ObjectiveChecks.Positive(beta, "DPO beta");
        CheckLabelSmoothing(lossType, labelSmoothing);
        using var scope = NewDisposeScope();
        var pc = ObjectiveChecks.Vector(policyChosen, "policy chosen log-probs");
        long b = pc.shape[0];
        ObjectiveChecks.NonEmpty(b, "DPO loss");
        var pr = ObjectiveChecks.Vector(policyRejected, "policy rejected log-probs", b);
        var rc = ObjectiveChecks.Vector(referenceChosen, "reference chosen log-probs", b).detach();
        var rr = ObjectiveChecks.Vector(referenceRejected, "reference rejected log-probs", b).detach();

        var chosenRatio = pc - rc;     // Δ(y_w)
        var rejectedRatio = pr - rr;   // Δ(y_l)
        var h = chosenRatio - rejectedRatio;
        double eps = labelSmoothing;

        Tensor losses = lossType switch
        {
            DpoLossType.Sigmoid => F.logsigmoid(beta * h).neg(),
            DpoLossType.Conservative => -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h),
            DpoLossType.Robust => (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps),
            DpoLossType.Hinge => (1 - beta * h).relu(),
            DpoLossType.Ipo => IpoLosses(chosenRatio, rejectedRatio, chosenLengths, rejectedLengths, b, beta),
            _ => throw new FineAlignException($"unknown DPO loss type {lossType}"),
        };
        var loss = losses.mean();

        var chosenRewards = beta * chosenRatio.detach();
        var rejectedRewards = beta * rejectedRatio.detach();
        var margins = chosenRewards - rejectedRewards;
        var metrics = new Dictionary<string, double>
        {
            ["rewards/chosen"] = ObjectiveChecks.Mean(chosenRewards),
            ["rewards/rejected"] = ObjectiveChecks.Mean(rejectedRewards),
            ["rewards/margins"] = ObjectiveChecks.Mean(margins),
            ["rewards/accuracies"] = ObjectiveChecks.Mean(margins.gt(0).to(ScalarType.Float32)),
            ["logps/chosen"] = ObjectiveChecks.Mean(pc),
            ["logps/rejected"] = ObjectiveChecks.Mean(pr),
        };
        return new ObjectiveResult(loss.MoveToOuterDisposeScope(), losses.MoveToOuterDisposeScope(), metrics);
    }

    /// <summary>Throws unless ε fits the loss type (robust divides by 1 − 2ε).</summary>
    public static void CheckLabelSmoothing(DpoLossType lossType, double labelSmoothing)
    {
        bool ok = lossType switch
        {
            DpoLossType.Conservative => labelSmoothing >= 0 && labelSmoothing <= 0.5,
            DpoLossType.Robust => labelSmoothing >= 0 && labelSmoothing < 0.5,
            _ => labelSmoothing == 0,
        };
        if (ok) return;
        throw new FineAlignException(lossType switch
        {
            DpoLossType.Conservative => $"label smoothing must be in [0, 0.5] for the conservative DPO loss, got {labelSmoothing}",
            DpoLossType.Robust => $"label smoothing must be in [0, 0.5) for the robust DPO loss, got {labelSmoothing}",
            _ => $"label smoothing {labelSmoothing} is only used by the conservative and robust DPO losses; set it to 0 for {lossType.ToString().ToLowerInvariant()}",
        });
    }

    // IPO regresses the length-averaged log-ratio gap onto 1/(2β) (Azar et al. 2023, eq. 17).
    private static Tensor IpoLosses(Tensor chosenRatio, Tensor rejectedRatio, Tensor? chosenLengths, Tensor? rejectedLengths, long b, double beta)
    {
        if (chosenLengths is null || rejectedLengths is null)
            throw new FineAlignException("the IPO loss needs the chosen and rejected completion lengths");
        var lw = ObjectiveChecks.Vector(chosenLengths, "chosen lengths", b);
        var ll = ObjectiveChecks.Vector(rejectedLengths, "rejected lengths", b);
        if (lw.le(0).any().item<bool>() || ll.le(0).any().item<bool>())
            throw new FineAlignException("the IPO loss needs completion lengths of at least 1 token");
        var hBar = chosenRatio / lw - rejectedRatio / ll;
        return (hBar - 1 / (2 * beta)).square();
    }
}
