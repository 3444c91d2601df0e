using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Models;

/// <summary>
/// The architecture part of a Hugging Face <c>config.json</c>, normalised across model types
/// (GPT-2 spells the same things <c>n_embd</c>, <c>n_layer</c>, ...). The original JSON is kept so
/// saving writes back every field we do not interpret.
/// </summary>
public sealed class ModelConfig
{
    public static readonly string[] SupportedTypes = { "llama", "mistral", "qwen2", "gpt2" };

    // Sizes above these are refused before anything is allocated: a hostile or corrupt config
    // must not make us try to allocate terabytes.
    private const long MaxVocab = 4_000_000, MaxHidden = 65_536, MaxLayers = 1_024, MaxPositions = 4_194_304;

    public string ModelType { get; init; } = "llama";
    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int IntermediateSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    public int HeadDim { get; init; }
    public int MaxPositionEmbeddings { get; init; }
    public double NormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10_000.0;
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry biases (Qwen2; Llama's <c>attention_bias</c>).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>gate/up/down biases (Llama <c>mlp_bias</c>); o_proj has a bias only for llama with <c>attention_bias</c>.</summary>
    public bool MlpBias { get; init; }
    public string HiddenAct { get; init; } = "silu";
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = Array.Empty<int>();
    public int? PadTokenId { get; init; }
    /// <summary>dtype the weights are stored in (<c>torch_dtype</c>): float32, float16 or bfloat16.</summary>
    public string TorchDtype { get; init; } = "float32";

    /// <summary>The JSON this config was read from (null for configs made in code).</summary>
    public JsonObject? Raw { get; init; }

    public bool IsGpt2 => ModelType == "gpt2";

    public static ModelConfig Load(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "config.json");
        if (!File.Exists(path)) throw new FineAlignException($"{path}: model config not found (a Hugging Face model folder needs config.json).");
        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(InputFile.ReadAllText(LinkedFile.Resolve(path), 64L << 20), documentOptions: StrictJson.Options) as JsonObject
                  ?? throw new FineAlignException($"{path}: config.json must be a JSON object.");
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{path}: config.json is not valid JSON ({StrictJson.Describe(e)}).");
        }
        return FromJson(obj, path);
    }

    public static ModelConfig FromJson(JsonObject o, string source = "config.json")
    {
        string type = Str(o, "model_type") ?? throw new FineAlignException($"{source}: field 'model_type' is missing.");
        if (Array.IndexOf(SupportedTypes, type) < 0)
            throw new FineAlignException($"{source}: model_type '{type}' is not supported (supported: {string.Join(", ", SupportedTypes)}).");

        ModelConfig c;
        if (type == "gpt2")
        {
            int hidden = Int(o, source, "n_embd", null);
            int heads = Int(o, source, "n_head", null);
            c = new ModelConfig
            {
                ModelType = type,
                VocabSize = Int(o, source, "vocab_size", null),
                HiddenSize = hidden,
                IntermediateSize = IntOr(o, source, "n_inner", 4 * hidden),
                NumLayers = Int(o, source, "n_layer", null),
                NumHeads = heads,
                NumKvHeads = heads,
                HeadDim = heads > 0 ? hidden / heads : 0,
                MaxPositionEmbeddings = Int(o, source, "n_positions", null),
                NormEps = Dbl(o, "layer_norm_epsilon") ?? 1e-5,
                TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? true,
                AttentionBias = true,
                MlpBias = true,
                HiddenAct = Str(o, "activation_function") ?? "gelu_new",
                BosTokenId = OptInt(o, "bos_token_id"),
                EosTokenIds = IntList(o, "eos_token_id"),
                PadTokenId = OptInt(o, "pad_token_id"),
                TorchDtype = Str(o, "torch_dtype") ?? Str(o, "dtype") ?? "float32",
                Raw = o,
            };
        }
        else
        {
            int hidden = Int(o, source, "hidden_size", null);
            int heads = Int(o, source, "num_attention_heads", null);
            c = new ModelConfig
            {
                ModelType = type,
                VocabSize = Int(o, source, "vocab_size", null),
                HiddenSize = hidden,
                IntermediateSize = Int(o, source, "intermediate_size", null),
                NumLayers = Int(o, source, "num_hidden_layers", null),
                NumHeads = heads,
                NumKvHeads = IntOr(o, source, "num_key_value_heads", heads),
                HeadDim = IntOr(o, source, "head_dim", heads > 0 ? hidden / heads : 0),
                MaxPositionEmbeddings = IntOr(o, source, "max_position_embeddings", 2048),
                NormEps = Dbl(o, "rms_norm_eps") ?? 1e-6,
                RopeTheta = Dbl(o, "rope_theta") ?? 10_000.0,
                TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? false,
                AttentionBias = type == "qwen2" || (Bool(o, "attention_bias") ?? false),
                MlpBias = Bool(o, "mlp_bias") ?? false,
                HiddenAct = Str(o, "hidden_act") ?? "silu",
                BosTokenId = OptInt(o, "bos_token_id"),
                EosTokenIds = IntList(o, "eos_token_id"),
                PadTokenId = OptInt(o, "pad_token_id"),
                TorchDtype = Str(o, "torch_dtype") ?? Str(o, "dtype") ?? "float32",
                Raw = o,
            };
        }
        c.Validate(source);
        return c;
    }

    /// <summary>Refuses impossible or absurd sizes before any tensor is allocated.</summary>
    public void Validate(string source = "config.json")
    {
        void Range(string name, long v, long lo, long hi)
        {
            if (v < lo || v > hi) throw new FineAlignException($"{source}: '{name}' = {v} is outside the supported range [{lo}, {hi}].");
        }
        Range("vocab_size", VocabSize, 1, MaxVocab);
        Range("hidden_size", HiddenSize, 1, MaxHidden);
        Range("intermediate_size", IntermediateSize, 1, 16 * MaxHidden);
        Range("num_hidden_layers", NumLayers, 1, MaxLayers);
        Range("num_attention_heads", NumHeads, 1, HiddenSize);
        Range("num_key_value_heads", NumKvHeads, 1, NumHeads);
        Range("max_position_embeddings", MaxPositionEmbeddings, 1, MaxPositions);
        Range("head_dim", HeadDim, 1, MaxHidden);
        // A special-token id outside the vocabulary would be accepted and fail (or never match) only during generation.
        foreach (var eos in EosTokenIds)
            if (eos < 0 || eos >= VocabSize)
                throw new FineAlignException($"{source}: 'eos_token_id' = {eos} is outside the vocabulary [0, {VocabSize}).");
        if (BosTokenId is int bos && (bos < 0 || bos >= VocabSize))
            throw new FineAlignException($"{source}: 'bos_token_id' = {bos} is outside the vocabulary [0, {VocabSize}).");
        if (NumHeads % NumKvHeads != 0)
            throw new FineAlignException($"{source}: num_attention_heads ({NumHeads}) must be a multiple of num_key_value_heads ({NumKvHeads}).");
        if (IsGpt2 && HiddenSize % NumHeads != 0)
            throw new FineAlignException($"{source}: n_embd ({HiddenSize}) must be divisible by n_head ({NumHeads}).");
        if (HeadDim % 2 != 0 && !IsGpt2)
            throw new FineAlignException($"{source}: head_dim ({HeadDim}) must be even for rotary embeddings.");
        if (TorchDtype is not ("float32" or "float16" or "bfloat16"))
            throw new FineAlignException($"{source}: torch_dtype '{TorchDtype}' is not supported (float32, float16, bfloat16).");
        string epsName = IsGpt2 ? "layer_norm_epsilon" : "rms_norm_eps";
        if (!(NormEps > 0) || !double.IsFinite(NormEps)) throw new FineAlignException($"{source}: '{epsName}' = {NormEps} must be a positive finite number.");
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta)) throw new FineAlignException($"{source}: 'rope_theta' = {RopeTheta} must be a positive finite number.");
    }

    /// <summary>Approximate parameter count (for FLOP estimates and messages).</summary>
    public long ParameterCount()
    {
        long h = HiddenSize, v = VocabSize;
        long attn = IsGpt2 ? 4 * h * h + 4 * h : h * HeadDim * (2L * NumHeads + 2L * NumKvHeads);
        long mlp = IsGpt2 ? 2 * h * IntermediateSize : 3 * h * IntermediateSize;
        long perLayer = attn + mlp + 4 * h;
        long embed = v * h + (IsGpt2 ? (long)MaxPositionEmbeddings * h : 0);
        long head = TieWordEmbeddings ? 0 : v * h;
        return NumLayers * perLayer + embed + head + h;
    }

    /// <summary>The config as Hugging Face writes it: the original fields, with ours overlaid.</summary>
    public JsonObject ToJson()
    {
        var o = Raw is null ? new JsonObject() : (JsonObject)Raw.DeepClone();
        o["model_type"] = ModelType;
        if (IsGpt2)
        {
            o["architectures"] ??= new JsonArray("GPT2LMHeadModel");
            o["vocab_size"] = VocabSize; o["n_embd"] = HiddenSize; o["n_layer"] = NumLayers; o["n_head"] = NumHeads;
            o["n_positions"] = MaxPositionEmbeddings; o["n_ctx"] ??= MaxPositionEmbeddings;
            o["layer_norm_epsilon"] = NormEps; o["activation_function"] = HiddenAct;
            if (IntermediateSize != 4 * HiddenSize) o["n_inner"] = IntermediateSize;
        }
        else
        {
            string arch = ModelType switch { "mistral" => "MistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", _ => "LlamaForCausalLM" };
            o["architectures"] ??= new JsonArray(arch);
            o["vocab_size"] = VocabSize; o["hidden_size"] = HiddenSize; o["intermediate_size"] = IntermediateSize;
            o["num_hidden_layers"] = NumLayers; o["num_attention_heads"] = NumHeads; o["num_key_value_heads"] = NumKvHeads;
            if (HeadDim != HiddenSize / NumHeads) o["head_dim"] = HeadDim;
            o["max_position_embeddings"] = MaxPositionEmbeddings; o["rms_norm_eps"] = NormEps; o["rope_theta"] = RopeTheta;
            o["hidden_act"] = HiddenAct;
            if (ModelType == "llama") { o["attention_bias"] = AttentionBias; o["mlp_bias"] = MlpBias; }
        }
        o["tie_word_embeddings"] = TieWordEmbeddings;
        if (BosTokenId is int b) o["bos_token_id"] = b;
        if (EosTokenIds.Length == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Length > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (PadTokenId is int p) o["pad_token_id"] = p;
        o["torch_dtype"] = TorchDtype;
        return o;
    }

    public void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    // ---- small JSON helpers that turn type errors into messages naming the field ----
    private static string? Str(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    private static bool? Bool(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue(out bool b) ? b : null;
    private static double? Dbl(JsonObject o, string k) => o[k] is JsonValue v
        ? v.TryGetValue(out double d) ? d : v.TryGetValue(out int i) ? i : v.TryGetValue(out long l) ? l
          // A JSON number too large for a double (1e999) is not read as a double; it must not fall back to the default.
          : v.GetValueKind() == JsonValueKind.Number ? double.PositiveInfinity : null
        : null;
    private static int? OptInt(JsonObject o, string k) => o[k] is JsonValue v
        ? v.TryGetValue(out int i) ? i : v.TryGetValue(out long l) && l is >= int.MinValue and <= int.MaxValue ? (int)l : null
        : null;

    private static int OptIntOf(JsonNode n) => n is JsonValue v
        ? v.TryGetValue(out int i) ? i : v.TryGetValue(out long l) && l is >= 0 and <= int.MaxValue ? (int)l : -1
        : -1;

    private static int Int(JsonObject o, string source, string k, int? fallback)
    {
        var node = o[k];
        if (node is null)
            return fallback ?? throw new FineAlignException($"{source}: field '{k}' is missing.");
        // A JsonValue built in code holds an int/long, one parsed from text a JsonElement: accept both.
        if (node is JsonValue v)
        {
            if (v.TryGetValue(out int i)) return i;
            if (v.TryGetValue(out long l) && l is >= int.MinValue and <= int.MaxValue) return (int)l;
            if (v.TryGetValue(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
        }
        throw new FineAlignException($"{source}: field '{k}' must be an integer, got {node.ToJsonString()}.");
    }

    private static int IntOr(JsonObject o, string source, string k, int fallback)
        => o[k] is null || o[k]!.GetValueKind() == JsonValueKind.Null ? fallback : Int(o, source, k, fallback);

    private static int[] IntList(JsonObject o, string k) => o[k] switch
    {
        JsonArray a => a.Select(n => n is JsonObject or JsonArray or null ? -1 : OptIntOf(n)).Where(i => i >= 0).ToArray(),
        JsonValue v when OptIntOf(v) >= 0 => new[] { OptIntOf(v) },
        _ => Array.Empty<int>(),
    };
}
