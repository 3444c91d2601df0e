using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>
/// What a preference/feedback loss returns: the scalar to backpropagate, the per-example losses
/// behind it ([B], same graph) and logged scalars named as TRL names them.
/// </summary>
public sealed record ObjectiveResult(Tensor Loss, Tensor Losses, IReadOnlyDictionary<string, double> Metrics)
{
    /// <summary>Wraps the result for the training loop's step function.</summary>
    public LossResult ToLossResult(long tokens = 0) => new(Loss, Metrics, tokens);
}

/// <summary>Shape/range checks shared by the objectives: one-line messages naming the tensor.</summary>
internal static class ObjectiveChecks
{
    /// <summary>A [B] (or [B, 1]) tensor as fp32 [B]; throws if its batch size is not <paramref name="batch"/>.</summary>
    public static Tensor Vector(Tensor t, string name, long batch = -1)
    {
        if (!(t.dim() == 1 || (t.dim() == 2 && t.shape[1] == 1)))
            throw new FineAlignException($"{name} must be a [batch] vector, got [{string.Join(", ", t.shape)}]");
        if (batch >= 0 && t.shape[0] != batch)
            throw new FineAlignException($"{name} has batch size {t.shape[0]}, expected {batch}");
        var v = t.dim() == 2 ? t.reshape(-1) : t;
        return v.dtype == ScalarType.Bool ? v : v.to(ScalarType.Float32);
    }

    /// <summary>A [B] label vector as bool (accepts bool or 0/1 integers).</summary>
    public static Tensor Labels(Tensor t, string name, long batch)
    {
        var v = Vector(t, name, batch);
        return v.dtype == ScalarType.Bool ? v : v.ne(0);
    }

    public static void Positive(double value, string name)
    {
        if (!(value > 0) || double.IsInfinity(value))
            throw new FineAlignException($"{name} must be a positive finite number, got {value}");
    }

    public static void NonNegative(double value, string name)
    {
        if (!(value >= 0) || double.IsInfinity(value))
            throw new FineAlignException($"{name} must be a non-negative finite number, got {value}");
    }

    public static void NonEmpty(long batch, string what)
    {
        if (batch == 0) throw new FineAlignException($"{what}: the batch is empty");
    }

    /// <summary>Mean of the detached values where <paramref name="mask"/> is true; 0 when none is (never NaN).</summary>
    public static double MaskedMean(Tensor values, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var n = mask.to(ScalarType.Int64).sum().item<long>();
        // masked_fill, not a product: a masked-out -inf log-prob must not turn the sum into NaN.
        return n == 0 ? 0.0 : values.detach().masked_fill(mask.logical_not(), 0).sum().item<float>() / n;
    }

    public static double Mean(Tensor values)
    {
        using var scope = NewDisposeScope();
        return values.detach().mean().item<float>();
    }
}
