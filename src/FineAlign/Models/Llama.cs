using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

// Field names below are the Hugging Face parameter names (TorchSharp names submodules after fields).
#pragma warning disable IDE1006

namespace FineAlign.Models;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019), computed in fp32 and cast back as
/// transformers' LlamaRMSNorm does: weight · (x / √(mean(x²) + eps)).
/// </summary>
public sealed partial class RMSNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Scalar _eps;

    public RMSNorm(long dim, double eps, ScalarType dtype = ScalarType.Float32) : base(nameof(RMSNorm))
    {
        weight = nn.Parameter(ones(dim, dtype));
        _eps = eps.ToScalar();   // lives with the module (see LiveScalars)
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        var variance = h.pow(LiveScalars.Two).mean(new long[] { -1 }, keepdim: true);
        h = h * (variance + _eps).rsqrt();
        var w = MasterCast.As(weight, x.dtype);   // bf16 activations stay bf16 (fp32 master gain)
        return (w * h.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Rotary position embedding (Su et al. 2021, RoFormer) in transformers' rotate_half layout:
/// the two halves of each head are rotated together (not interleaved pairs).
/// </summary>
internal static partial class Rotary
{
    /// <summary>inv_freq[i] = 1 / θ^(2i/D), as transformers computes it (in fp32).</summary>
    public static float[] InverseFrequencies(int headDim, double theta)
    {
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = (float)(1.0 / Math.Pow(theta, (float)(2 * i) / headDim));
        return inv;
    }

    /// <summary>
    /// Applies config.json's <c>rope_scaling</c>: "linear" (positions / factor) and "llama3"
    /// (Llama 3.1: long wavelengths divided by factor, short kept, a smooth blend between —
    /// transformers' _compute_llama3_parameters). Other types are refused.
    /// </summary>
    public static float[] Scaled(float[] inv, System.Text.Json.Nodes.JsonNode? ropeScaling, string source = "config.json")
    {
        if (ropeScaling is not System.Text.Json.Nodes.JsonObject rs) return inv;
        string? type = (rs["rope_type"] ?? rs["type"])?.ToString();
        double Num(string k, double? fallback)
        {
            if (rs[k] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue(out double d)) return d;
            return fallback ?? throw new FineAlignException($"{source}: rope_scaling.{k} is missing.");
        }
        switch (type)
        {
            case null or "default":
                return inv;
            case "linear":
            {
                double factor = Num("factor", null);
                return inv.Select(f => (float)(f / factor)).ToArray();
            }
            case "llama3":
            {
                double factor = Num("factor", null), low = Num("low_freq_factor", 1.0), high = Num("high_freq_factor", 4.0);
                double oldLen = Num("original_max_position_embeddings", 8192);
                double lowWavelen = oldLen / low, highWavelen = oldLen / high;
                var result = new float[inv.Length];
                for (int i = 0; i < inv.Length; i++)
                {
                    double f = inv[i], wavelen = 2 * Math.PI / f;
                    if (wavelen < highWavelen) result[i] = (float)f;
                    else if (wavelen > lowWavelen) result[i] = (float)(f / factor);
                    else
                    {
                        double smooth = (oldLen / wavelen - low) / (high - low);
                        result[i] = (float)((1 - smooth) * f / factor + smooth * f);
                    }
                }
                return result;
            }
            default:
                throw new FineAlignException($"{source}: rope_scaling type '{type}' is not supported (default, linear, llama3).");
        }
    }

    /// <summary>cos and sin, [batch, 1, tokens, headDim], in fp32.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, int headDim, double theta)
        => Tables(positions, InverseFrequencies(headDim, theta));

    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, float[] inv)
    {
        using var scope = NewDisposeScope();
        var invFreq = tensor(inv, device: positions.device);                                    // [D/2]
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;                   // [B, T, D/2]
        var emb = cat(new[] { freqs, freqs }, -1).unsqueeze(1);                                 // [B, 1, T, D]
        return (emb.cos().MoveToOuterDisposeScope(), emb.sin().MoveToOuterDisposeScope());
    }

    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat(new[] { x2.neg(), x1 }, -1);
        return x * cos + rotated * sin;
    }
}

internal sealed partial class LlamaAttention : nn.Module
{
    private readonly Projection q_proj, k_proj, v_proj, o_proj;
    private readonly int _heads, _kvHeads, _headDim;

    public LlamaAttention(ModelConfig c, ScalarType dtype) : base(nameof(LlamaAttention))
    {
        _heads = c.NumHeads; _kvHeads = c.NumKvHeads; _headDim = c.HeadDim;
        // transformers: q/k/v bias = attention_bias (always on for Qwen2); o_proj bias only for Llama's attention_bias.
        bool oBias = c.AttentionBias && c.ModelType == "llama";
        q_proj = new Projection(c.HiddenSize, (long)_heads * _headDim, c.AttentionBias, dtype);
        k_proj = new Projection(c.HiddenSize, (long)_kvHeads * _headDim, c.AttentionBias, dtype);
        v_proj = new Projection(c.HiddenSize, (long)_kvHeads * _headDim, c.AttentionBias, dtype);
        o_proj = new Projection((long)_heads * _headDim, c.HiddenSize, oBias, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionPlan plan, int layer)
    {
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin);
        if (plan.Cache is not null) (k, v) = plan.Cache.Update(layer, k, v);
        var o = plan.Attend(q, k, v);
        return o_proj.forward(o.transpose(1, 2).reshape(b, t, (long)_heads * _headDim));
    }
}

internal sealed partial class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private readonly Projection gate_proj, up_proj, down_proj;
    private readonly string _act;

    public LlamaMlp(ModelConfig c, ScalarType dtype) : base(nameof(LlamaMlp))
    {
        _act = c.HiddenAct;
        gate_proj = new Projection(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype);
        up_proj = new Projection(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype);
        down_proj = new Projection(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype);
        RegisterComponents();
    }

    // SwiGLU (Shazeer 2020): down(act(gate(x)) · up(x)).
    public override Tensor forward(Tensor x)
        => down_proj.forward(Activations.Apply(_act, gate_proj.forward(x)) * up_proj.forward(x));
}

internal sealed partial class LlamaDecoderLayer : nn.Module
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMlp mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(ModelConfig c, ScalarType dtype) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(c, dtype);
        mlp = new LlamaMlp(c, dtype);
        input_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, dtype);
        post_attention_layernorm = new RMSNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionPlan plan, int layer)
    {
        var h = x + self_attn.Forward(input_layernorm.forward(x), cos, sin, plan, layer);
        return h + mlp.forward(post_attention_layernorm.forward(h));
    }
}

internal sealed class LlamaModel : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<LlamaDecoderLayer> layers;
    public readonly RMSNorm norm;

    public LlamaModel(ModelConfig c, ScalarType dtype) : base(nameof(LlamaModel))
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumLayers).Select(_ => new LlamaDecoderLayer(c, dtype)).ToArray());
        norm = new RMSNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// The decoder of Llama, Mistral and Qwen2 (transformers' LlamaForCausalLM / MistralForCausalLM /
/// Qwen2ForCausalLM): RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP.
/// Mistral/Qwen2 sliding-window attention is not applied (exact for sequences shorter than the window).
/// </summary>
public sealed partial class LlamaForCausalLM : CausalLM
{
    private readonly LlamaModel model;
    private readonly Linear? lm_head;
    private readonly float[] _invFreq;
    private readonly int? _slidingWindow;

    public LlamaForCausalLM(ModelConfig config, ScalarType dtype = ScalarType.Float32) : base(nameof(LlamaForCausalLM), config)
    {
        if (config.IsGpt2) throw new ArgumentException("use Gpt2LMHeadModel for model_type gpt2");
        Activations.Check(config.HiddenAct, "config.json: hidden_act");
        _invFreq = Rotary.Scaled(Rotary.InverseFrequencies(config.HeadDim, config.RopeTheta), config.Raw?["rope_scaling"]);
        _slidingWindow = SlidingWindow(config);
        model = new LlamaModel(config, dtype);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, false, dtype: dtype);
        RegisterComponents();
    }

    // Mistral applies sliding_window to every layer; Qwen2 only with use_sliding_window (off in
    // released configs) and then per layer, which is not implemented.
    private static int? SlidingWindow(ModelConfig c)
    {
        int? window = c.Raw?["sliding_window"] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue(out double d) && d >= 1 ? (int)Math.Min(d, int.MaxValue) : null;
        if (c.ModelType == "mistral") return window;
        if (c.ModelType == "qwen2" && window is not null && c.Raw?["use_sliding_window"] is System.Text.Json.Nodes.JsonValue u && u.TryGetValue(out bool on) && on)
            throw new FineAlignException("config.json: Qwen2 use_sliding_window = true is not supported.");
        return null;
    }

    public override Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        if (cache is not null && !is_grad_enabled()) return DecodeHidden(inputIds, attentionMask, cache);   // LlamaDecode.cs
        using var scope = NewDisposeScope();
        inputIds = OnModelDevice(inputIds, model.embed_tokens.weight!);
        if (attentionMask is not null) attentionMask = OnModelDevice(attentionMask, model.embed_tokens.weight!);
        var x = ToComputeDtype(model.embed_tokens.forward(inputIds));
        var plan = AttentionPlan.Create(inputIds, attentionMask, cache, x.dtype, _slidingWindow);
        var (cos, sin) = Rotary.Tables(plan.Positions, _invFreq);
        if (cos.dtype != x.dtype) { cos = cos.to(x.dtype); sin = sin.to(x.dtype); }
        bool recompute = CheckpointLayers(cache);
        for (int i = 0; i < model.layers.Count; i++)
        {
            var layer = model.layers[i];
            int index = i;
            if (cache is not null)   // a prefill with autograd on: the cache keeps the layers' k and v, so no per-layer scope
            {
                x = layer.Forward(x, cos, sin, plan, i);
                continue;
            }
            // Each layer's intermediates (q, k, v, rotary temporaries, norms, gate/up products: ≈ 0.26 GB per layer at
            // qwen2.5-0.5b, 4 × 512, bf16) die with the layer, not with this forward: one dispose scope for the whole
            // stack kept every layer's handles alive until the end, which made a no-grad reference pass hold all 24
            // layers' activations (6 GB). Autograd keeps what backward needs through its own references.
            Tensor next;
            using (var layerScope = NewDisposeScope())
                next = (recompute
                    ? Recompute.Apply((h, c) => layer.Forward(h, c[0]!, c[1]!, plan.WithMask(c[2]), index), x, cos, sin, plan.Mask)
                    : layer.Forward(x, cos, sin, plan, i)).MoveToOuterDisposeScope();
            x.Dispose();             // the layer's input, consumed (the embedding output or the previous layer's output)
            x = next;
        }
        x = model.norm.forward(x);
        cache?.Advance((int)inputIds.shape[1]);
        return x.MoveToOuterDisposeScope();
    }

    public override Tensor LmHead(Tensor hidden)
    {
        var w = lm_head?.weight ?? model.embed_tokens.weight!;
        return F.linear(hidden, MasterCast.As(w, hidden.dtype));   // cast once per optimizer step inside MasterCast.Step
    }
}
