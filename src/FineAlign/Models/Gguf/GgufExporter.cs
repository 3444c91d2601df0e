using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models.Gguf;

/// <summary>What <see cref="GgufExporter.Export"/> wrote.</summary>
public sealed record GgufExportResult(string Path, long Bytes, string Architecture, int TensorCount, int VocabSize, GgmlType Type, string TokenizerModel, string Pre);

/// <summary>
/// Writes a Llama, Mistral or Qwen2 <see cref="CausalLM"/> as a GGUF v3 file that llama.cpp (Ollama, LM Studio) runs:
/// the architecture metadata, llama.cpp's tensor names, and the vocabulary of the model's tokenizer folder.
/// The model is whatever is in memory, so a LoRA adapter is merged into it before this call.
/// </summary>
/// <remarks>
/// Rotary layout: transformers rotates the two halves of each head together (rotate_half); llama.cpp's "llama"
/// architecture rotates adjacent pairs (2i, 2i+1). llama.cpp's converter therefore permutes the rows of the q and k
/// projections of Llama/Mistral checkpoints (per head: row 2i ← i, row 2i+1 ← i + D/2), and so does this exporter.
/// Qwen2 runs llama.cpp's NeoX rotary (halves, as transformers), so its rows are written unchanged.
/// </remarks>
public static class GgufExporter
{
    /// <summary>HF model types this exporter writes, and the llama.cpp architecture each becomes.</summary>
    public static readonly IReadOnlyDictionary<string, string> Architectures = new Dictionary<string, string>
    {
        ["llama"] = "llama", ["mistral"] = "llama", ["qwen2"] = "qwen2",
    };

    public static GgmlType ParseType(string name) => name.Trim().ToLowerInvariant() switch
    {
        "f32" or "float32" => GgmlType.F32,
        "f16" or "float16" => GgmlType.F16,
        "bf16" or "bfloat16" => GgmlType.BF16,
        _ => throw new FineAlignException($"--type '{name}' is not a GGUF type this exporter writes (f32, f16, bf16)."),
    };

    /// <summary>
    /// Exports <paramref name="model"/> with the tokenizer files of <paramref name="tokenizerFolder"/> to
    /// <paramref name="outPath"/>: matrices in <paramref name="type"/>, norms and biases always in f32.
    /// </summary>
    public static GgufExportResult Export(CausalLM model, string tokenizerFolder, string outPath, GgmlType type = GgmlType.F32, string? name = null)
    {
        var c = model.Config;
        if (!Architectures.TryGetValue(c.ModelType, out var arch))
            throw new FineAlignException($"model_type '{c.ModelType}' cannot be exported to GGUF (supported: {string.Join(", ", Architectures.Keys)}).");
        if (c.HiddenAct != "silu")
            throw new FineAlignException($"config.json: hidden_act '{c.HiddenAct}' cannot be exported to GGUF (llama.cpp's {arch} uses SiLU).");
        if (c.ModelType == "qwen2" && c.MlpBias)
            throw new FineAlignException("config.json: Qwen2 with mlp_bias cannot be exported to GGUF (llama.cpp's qwen2 has no MLP biases).");

        var vocab = GgufVocabulary.FromFolder(tokenizerFolder, c);
        vocab.PadTo(c.VocabSize, tokenizerFolder);

        var w = new GgufWriter();
        w.AddString("general.architecture", arch);
        w.AddString("general.name", name ?? "finealign-model");
        w.AddUInt32("general.file_type", type switch { GgmlType.F16 => 1u, GgmlType.BF16 => 32u, _ => 0u });   // llama_ftype ALL_F32 / MOSTLY_F16 / MOSTLY_BF16
        w.AddUInt32($"{arch}.vocab_size", (uint)c.VocabSize);
        w.AddUInt32($"{arch}.context_length", (uint)c.MaxPositionEmbeddings);
        w.AddUInt32($"{arch}.embedding_length", (uint)c.HiddenSize);
        w.AddUInt32($"{arch}.block_count", (uint)c.NumLayers);
        w.AddUInt32($"{arch}.feed_forward_length", (uint)c.IntermediateSize);
        w.AddUInt32($"{arch}.attention.head_count", (uint)c.NumHeads);
        w.AddUInt32($"{arch}.attention.head_count_kv", (uint)c.NumKvHeads);
        w.AddUInt32($"{arch}.attention.key_length", (uint)c.HeadDim);
        w.AddUInt32($"{arch}.attention.value_length", (uint)c.HeadDim);
        w.AddFloat32($"{arch}.attention.layer_norm_rms_epsilon", (float)c.NormEps);
        w.AddFloat32($"{arch}.rope.freq_base", (float)c.RopeTheta);
        w.AddUInt32($"{arch}.rope.dimension_count", (uint)c.HeadDim);
        float[]? ropeFactors = RopeScaling(c, arch, w);
        vocab.WriteTo(w);

        var state = model.state_dict();
        bool permute = arch == "llama";
        int tensors = 0;
        foreach (var (hfName, t) in state)
        {
            if (c.TieWordEmbeddings && hfName == "lm_head.weight") continue;
            string gguf = TensorName(hfName)
                ?? throw new FineAlignException($"tensor '{hfName}' has no llama.cpp name; a LoRA-wrapped model must be merged before GGUF export.");
            int? heads = !permute ? null
                : Regex.IsMatch(hfName, @"\.self_attn\.q_proj\.(weight|bias)$") ? c.NumHeads
                : Regex.IsMatch(hfName, @"\.self_attn\.k_proj\.(weight|bias)$") ? c.NumKvHeads
                : null;
            // Norm gains and biases stay f32 (as llama.cpp's converter writes them): they are tiny, and ggml adds/multiplies them in f32.
            var tt = t.dim() == 1 ? GgmlType.F32 : type;
            w.AddTensor(gguf, t.shape, tt, () => Bytes(t, heads, tt));
            tensors++;
        }
        if (ropeFactors is not null)
        {
            var f = ropeFactors;
            w.AddTensor("rope_freqs.weight", new long[] { f.Length }, GgmlType.F32, () => f.SelectMany(BitConverter.GetBytes).ToArray());
            tensors++;
        }
        w.Write(outPath);
        return new GgufExportResult(Path.GetFullPath(outPath), new FileInfo(outPath).Length, arch, tensors, c.VocabSize, type, vocab.Model, vocab.Pre);
    }

    /// <summary>
    /// llama.cpp's name for a Hugging Face tensor (convert_hf_to_gguf's tensor map for Llama/Qwen2), or null.
    /// </summary>
    public static string? TensorName(string hf)
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var m = Regex.Match(hf, @"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$");
        if (!m.Success) return null;
        string part = m.Groups[2].Value switch
        {
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => "",
        };
        return part.Length == 0 ? null : $"blk.{m.Groups[1].Value}.{part}.{m.Groups[3].Value}";
    }

    /// <summary>
    /// Rows of a q or k projection (weight [heads·D, in] or bias [heads·D]) from transformers' rotate_half order to
    /// llama.cpp's interleaved pairs: per head, view the D rows as [2, D/2] and transpose to [D/2, 2].
    /// </summary>
    public static Tensor Permute(Tensor w, int heads)
    {
        long rows = w.shape[0];
        var shape = w.dim() == 1 ? new[] { heads, 2, rows / heads / 2 } : new[] { heads, 2, rows / heads / 2, w.shape[1] };
        return w.detach().reshape(shape).transpose(1, 2).reshape(w.shape).contiguous();
    }

    // One tensor's file bytes, converted when the writer reaches it; every temporary is disposed here (the weights of
    // a large model are not left to the finalizer).
    private static byte[] Bytes(Tensor t, int? permuteHeads, GgmlType type)
    {
        var dtype = type switch { GgmlType.F16 => ScalarType.Float16, GgmlType.BF16 => ScalarType.BFloat16, _ => ScalarType.Float32 };
        using var scope = NewDisposeScope();
        var source = permuteHeads is int h ? Permute(t, h) : t.detach();
        var c = source.cpu().to(dtype).contiguous();
        return c.bytes.ToArray();
    }

    // config.json rope_scaling: "linear" → GGUF's rope.scaling keys; "llama3" → per-frequency divisors in the
    // rope_freqs tensor (llama.cpp divides each inverse frequency by its factor), as llama.cpp's converter does.
    private static float[]? RopeScaling(ModelConfig c, string arch, GgufWriter w)
    {
        if (c.Raw?["rope_scaling"] is not JsonObject rs) return null;
        string? kind = (rs["rope_type"] ?? rs["type"])?.ToString();
        switch (kind)
        {
            case null or "default": return null;
            case "linear":
                double factor = rs["factor"] is JsonValue fv && fv.TryGetValue(out double f) ? f
                    : throw new FineAlignException("config.json: rope_scaling.factor is missing.");
                w.AddString($"{arch}.rope.scaling.type", "linear");
                w.AddFloat32($"{arch}.rope.scaling.factor", (float)factor);
                return null;
            case "llama3":
                var inv = Rotary.InverseFrequencies(c.HeadDim, c.RopeTheta);
                var scaled = Rotary.Scaled(inv, rs);
                return inv.Select((x, i) => x / scaled[i]).ToArray();
            default:
                throw new FineAlignException($"config.json: rope_scaling type '{kind}' cannot be exported to GGUF (default, linear, llama3).");
        }
    }
}
