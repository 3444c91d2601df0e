using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

#pragma warning disable IDE1006 // field names are the Hugging Face / PEFT parameter names

namespace FineAlign.Models;

/// <summary>
/// A named linear projection of the decoder (q_proj … down_proj): nn.Linear's parameters (<c>weight</c> [out, in],
/// <c>bias</c>) plus, once <see cref="Lora.Apply"/> attaches one, a LoRA adapter (Hu et al. 2021, arXiv 2106.09685)
/// as PEFT lays it out: <c>lora_A.weight</c> [r, in], <c>lora_B.weight</c> [out, r], output
/// W·x + b + (α/r)·B·A·dropout(x). The adapter is kept per projection (not fused), so each stays addressable by name.
/// </summary>
/// <remarks>
/// Mixed precision: the weight is cast to the input's dtype, so bf16 activations multiply bf16 copies of fp32 master
/// weights (autograd carries the gradient back to the fp32 parameter). Nothing is cast when the dtypes agree, and inside a
/// <see cref="MasterCast.Step"/> scope each master is cast once per optimizer step.
/// </remarks>
public sealed class Projection : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private Linear? lora_A, lora_B;
    private Scalar? _scaling;
    private double _dropout;
    private LoraState? _state;

    public Projection(long inFeatures, long outFeatures, bool hasBias, ScalarType dtype = ScalarType.Float32) : base("Linear")
    {
        // nn.Linear's default: U(−1/√in, 1/√in) for weight and bias (overwritten by ModelFactory.Initialize or a checkpoint).
        double bound = 1.0 / Math.Sqrt(inFeatures);
        weight = nn.Parameter(empty(new[] { outFeatures, inFeatures }, dtype).uniform_(-bound, bound));
        if (hasBias) bias = nn.Parameter(empty(outFeatures, dtype).uniform_(-bound, bound));
        RegisterComponents();
    }

    public long InFeatures => weight.shape[1];
    public long OutFeatures => weight.shape[0];
    public Parameter Weight => weight;
    public Parameter? Bias => bias;
    /// <summary>The adapter's A [r, in] and B [out, r], or null.</summary>
    public (Parameter A, Parameter B)? Adapter => lora_A is null ? null : (lora_A.weight!, lora_B!.weight!);
    public double Scaling { get; private set; }

    /// <summary>Attaches a LoRA adapter: A ~ kaiming-uniform(a = √5) = U(−1/√in, 1/√in), B = 0 (PEFT's default init), fp32.</summary>
    internal void Attach(int r, double scaling, double dropout, LoraState state, Generator gen)
    {
        if (lora_A is not null) throw new FineAlignException("a LoRA adapter is already attached to this projection.");
        lora_A = nn.Linear(InFeatures, r, hasBias: false, dtype: ScalarType.Float32);
        lora_B = nn.Linear(r, OutFeatures, hasBias: false, dtype: ScalarType.Float32);
        using (no_grad())
        {
            double bound = 1.0 / Math.Sqrt(InFeatures);
            lora_A.weight!.uniform_(-bound, bound, gen);
            lora_B.weight!.zero_();
        }
        register_module("lora_A", lora_A);
        register_module("lora_B", lora_B);
        Scaling = scaling;
        _scaling = scaling.ToScalar();
        _dropout = dropout;
        _state = state;
    }

    /// <summary>After the whole model was cast (e.g. a bf16 base), puts the adapter back in fp32 with its exact values.</summary>
    internal void RestoreAdapter(Tensor a, Tensor b)
    {
        lora_A!.to(ScalarType.Float32);
        lora_B!.to(ScalarType.Float32);
        using var _ = no_grad();
        lora_A.weight!.copy_(a);
        lora_B.weight!.copy_(b);
        lora_A.weight!.requires_grad = true;
        lora_B.weight!.requires_grad = true;
    }

    public override Tensor forward(Tensor x)
    {
        var w = MasterCast.As(weight, x.dtype);
        var b = bias is null ? null : MasterCast.As(bias, x.dtype);
        var y = F.linear(x, w, b);
        var delta = LoraDelta(x);
        return delta is null ? y : y + delta;
    }

    /// <summary>Whether an attached adapter is switched on (its delta is added to the output).</summary>
    internal bool AdapterActive => lora_A is not null && _state is { Enabled: true };

    /// <summary>
    /// The adapter's term (α/r)·B·A·dropout(x), or null when no adapter is active. The fused decode path
    /// (<see cref="FusedProjections"/>) adds it to this projection's slice of the fused output.
    /// </summary>
    internal Tensor? LoraDelta(Tensor x)
    {
        if (!AdapterActive) return null;
        var h = _dropout > 0 && training ? F.dropout(x, _dropout, true) : x;
        var a = MasterCast.As(lora_A!.weight!, x.dtype);
        var bb = MasterCast.As(lora_B!.weight!, x.dtype);
        return F.linear(F.linear(h, a), bb) * _scaling!;
    }
}
