using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>Where the head is read: one score per sequence (reward model) or one per token (value model, TLCR discriminator).</summary>
public enum HeadKind { Sequence, Token }

/// <summary>
/// A language-model trunk with a linear head on its final hidden states: the sequence reward model
/// (1 output, read at the last real token), the PPO value model (1 output per token) and the TLCR token
/// discriminator (2 outputs per token). Saved as transformers' <c>XForSequenceClassification</c> /
/// <c>XForTokenClassification</c> folders (<c>model.*</c> or <c>transformer.*</c> plus <c>score.*</c>), so
/// the folder loads in Hugging Face tools; the trunk's LM head is not part of it.
/// </summary>
/// <remarks>
/// Like transformers, the sequence head has no bias and the token head has one (the TLCR paper's head has
/// none; a bias initialised at 0 changes nothing at the start and keeps the folder loadable by transformers).
/// </remarks>
public sealed class ScoredLM : nn.Module
{
    private readonly CausalLM trunk;
    private readonly Linear score;

    public ScoredLM(CausalLM trunk, HeadKind kind, int numLabels, long seed = 0) : base(nameof(ScoredLM))
    {
        if (numLabels < 1) throw new FineAlignException($"a scoring head needs at least one output (got {numLabels}).");
        this.trunk = trunk;
        Kind = kind;
        NumLabels = numLabels;
        var dtype = trunk.Lora is not null || trunk.ComputeDtype is not null ? ScalarType.Float32 : trunk.parameters().First().dtype;
        score = nn.Linear(trunk.Config.HiddenSize, numLabels, hasBias: kind == HeadKind.Token, dtype: dtype);
        using (no_grad())
        {
            // std 1/sqrt(hidden + 1), as TRL initialises reward heads: scores start near 0 at any width.
            var gen = new torch.Generator((ulong)seed);
            score.weight!.normal_(0, 1.0 / Math.Sqrt(trunk.Config.HiddenSize + 1), gen);
            score.bias?.zero_();
        }
        RegisterComponents();
        // The trunk's own LM head is not used (and not saved): keep it out of the optimizer.
        foreach (var (name, p) in trunk.named_parameters())
            if (name.StartsWith("lm_head", StringComparison.Ordinal)) p.requires_grad = false;
    }

    public CausalLM Trunk => trunk;
    public ModelConfig Config => trunk.Config;
    public HeadKind Kind { get; }
    public int NumLabels { get; }

    /// <summary>Head outputs at every position, [batch, tokens, labels].</summary>
    public Tensor TokenScores(Tensor inputIds, Tensor? attentionMask = null)
    {
        var h = trunk.ForwardHidden(inputIds, attentionMask);
        // Mixed precision: the head (and so every score and loss) stays fp32.
        return score.forward(h.dtype == score.weight!.dtype ? h : h.to(score.weight!.dtype));
    }

    /// <summary>
    /// One score per sequence: the head at the last real token (works for left and right padding), [batch]
    /// for one label, else [batch, labels].
    /// </summary>
    public Tensor SequenceScores(Tensor inputIds, Tensor? attentionMask = null)
    {
        var all = TokenScores(inputIds, attentionMask);
        var last = LastTokenIndex(inputIds, attentionMask);
        var picked = all[torch.arange(all.shape[0], device: all.device), last];
        return NumLabels == 1 ? picked.squeeze(-1) : picked;
    }

    /// <summary>Index of the last real token of each row: the largest position whose mask is 1.</summary>
    public static Tensor LastTokenIndex(Tensor inputIds, Tensor? attentionMask)
    {
        long t = inputIds.shape[1];
        if (attentionMask is null) return torch.full(inputIds.shape[0], t - 1, dtype: ScalarType.Int64, device: inputIds.device);
        var positions = torch.arange(t, device: inputIds.device).unsqueeze(0);
        return (attentionMask.ne(0).to(ScalarType.Int64) * (positions + LiveScalars.One)).argmax(-1);
    }

    private string Architecture(string modelType)
    {
        string prefix = modelType switch { "gpt2" => "GPT2", "mistral" => "Mistral", "qwen2" => "Qwen2", _ => "Llama" };
        return prefix + (Kind == HeadKind.Sequence ? "ForSequenceClassification" : "ForTokenClassification");
    }

    /// <summary>Sub-folder of a saved LoRA-trained scoring model holding its adapter (what a resume restores).</summary>
    public const string AdapterFolder = "adapter";

    /// <summary>The tensors as transformers names them: trunk (without lm_head) plus <c>score.*</c>. A LoRA trunk is
    /// written merged (base + scaling·B·A), so the folder is a plain classification model every tool loads.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> HfTensors()
    {
        var trunkTensors = trunk.Lora is not null ? Lora.MergedTensors(trunk) : trunk.state_dict();
        foreach (var (name, t) in trunkTensors)
            if (!name.StartsWith("lm_head", StringComparison.Ordinal)) yield return new(name, t);
        yield return new("score.weight", score.weight!);
        if (score.bias is not null) yield return new("score.bias", score.bias);
    }

    /// <summary>
    /// Writes a Hugging Face classification folder atomically (temp folder + rename): config.json with
    /// architectures, num_labels and pad_token_id (transformers finds the last token through it),
    /// model.safetensors, and the tokenizer's files.
    /// </summary>
    public void Save(string folder, TextTokenizer? tokenizer = null) => ModelIO.WriteFolder(folder, tmp =>
    {
        var json = trunk.Config.ToJson();
        json["architectures"] = new JsonArray(Architecture(trunk.Config.ModelType));
        json["num_labels"] = NumLabels;
        var id2label = new JsonObject();
        var label2id = new JsonObject();
        for (int i = 0; i < NumLabels; i++) { id2label[i.ToString()] = $"LABEL_{i}"; label2id[$"LABEL_{i}"] = i; }
        json["id2label"] = id2label;
        json["label2id"] = label2id;
        json["finealign_head"] = Kind == HeadKind.Sequence ? "sequence" : "token";
        int? pad = tokenizer?.PaddingId ?? trunk.Config.PadTokenId ?? (trunk.Config.EosTokenIds.Length > 0 ? trunk.Config.EosTokenIds[0] : null);
        if (pad is int p) json["pad_token_id"] = p;
        json["torch_dtype"] = ModelIO.DtypeName(trunk.parameters().First().dtype);
        File.WriteAllText(Path.Combine(tmp, "config.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        SafeTensors.Save(Path.Combine(tmp, SafeTensors.SingleFileName), HfTensors());
        tokenizer?.Save(tmp);
        if (trunk.Lora is not null)
        {
            Directory.CreateDirectory(Path.Combine(tmp, AdapterFolder));
            Lora.WriteAdapter(trunk, Path.Combine(tmp, AdapterFolder));
        }
    });

    /// <summary>
    /// Restores a folder written by <see cref="Save"/> into this model (resume): every tensor for a plain trunk; for a LoRA
    /// trunk the adapter (from <see cref="AdapterFolder"/>) and the head, leaving the frozen base untouched.
    /// </summary>
    public void LoadWeights(string folder)
    {
        if (trunk.Lora is null)
        {
            using var loaded = Load(folder);
            using var _ = no_grad();
            var src = loaded.state_dict();
            foreach (var (name, p) in state_dict())
            {
                if (name.StartsWith("trunk.lm_head", StringComparison.Ordinal) || name.StartsWith("lm_head", StringComparison.Ordinal)) continue;
                if (!src.TryGetValue(name, out var t)) throw new FineAlignException($"{folder}: tensor '{name}' is missing");
                p.copy_(t);
            }
            return;
        }
        Lora.LoadAdapterWeights(trunk, Path.Combine(folder, AdapterFolder));
        using var ck = SafeTensorsCheckpoint.Open(folder);
        using var __ = no_grad();
        foreach (var (name, p) in new[] { ("score.weight", score.weight), ("score.bias", score.bias) })
        {
            if (p is null) continue;
            using var t = ck.Read(name, p.dtype);
            p.copy_(t);
        }
    }

    /// <summary>Loads a folder written by <see cref="Save"/> (or transformers' classification models of the supported types).</summary>
    public static ScoredLM Load(string folder, ScalarType dtype = ScalarType.Float32)
    {
        if (!Directory.Exists(folder)) throw new FineAlignException($"{folder}: model folder not found.");
        string configPath = Path.Combine(folder, "config.json");
        var config = ModelConfig.Load(configPath);
        var raw = config.Raw!;
        string arch = raw["architectures"] is JsonArray { Count: > 0 } a ? a[0]?.GetValue<string>() ?? "" : "";
        HeadKind kind = arch.EndsWith("ForTokenClassification", StringComparison.Ordinal) ? HeadKind.Token
            : arch.EndsWith("ForSequenceClassification", StringComparison.Ordinal) ? HeadKind.Sequence
            : throw new FineAlignException($"{configPath}: architectures '{arch}' is not a sequence or token classification model " +
                                           "(a reward/value/discriminator folder written by finealign rm, tlcr-train or ppo).");
        using var ck = SafeTensorsCheckpoint.Open(folder);
        if (!ck.Contains("score.weight")) throw new FineAlignException($"{folder}: tensor 'score.weight' (the scoring head) is missing.");
        var headShape = ck.Entry("score.weight").Shape;
        if (headShape.Length != 2 || headShape[1] != config.HiddenSize || headShape[0] < 1 || headShape[0] > 65536)
            throw new FineAlignException($"{ck.FileOf("score.weight")}: tensor 'score.weight' has shape [{string.Join(", ", headShape)}], expected [labels, {config.HiddenSize}].");
        var trunk = ModelFactory.Construct(config, dtype);
        var scored = new ScoredLM(trunk, kind, (int)headShape[0]);
        try
        {
            using (no_grad())
            {
                var expected = scored.HfTensors().ToDictionary(kv => kv.Key, kv => kv.Value);
                foreach (var (name, p) in expected)
                {
                    string key = ck.Contains(name) ? name
                        : config.IsGpt2 && name.StartsWith("transformer.", StringComparison.Ordinal) && ck.Contains(name["transformer.".Length..]) ? name["transformer.".Length..]
                        : throw new FineAlignException($"{folder}: tensor '{name}' (shape [{string.Join(", ", p.shape)}]) is missing from the checkpoint.");
                    var e = ck.Entry(key);
                    if (!e.Shape.SequenceEqual(p.shape))
                        throw new FineAlignException($"{ck.FileOf(key)}: tensor '{key}' has shape [{string.Join(", ", e.Shape)}] but config.json implies [{string.Join(", ", p.shape)}].");
                    using var t = ck.Read(key, p.dtype);
                    p.copy_(t);
                }
                foreach (var name in ck.Names)
                    if (!expected.ContainsKey(name) && !expected.ContainsKey("transformer." + name) && !IsIgnorable(name))
                        throw new FineAlignException($"{ck.FileOf(name)}: unexpected tensor '{name}' for a {config.ModelType} {kind.ToString().ToLowerInvariant()} classification model.");
            }
            return scored;
        }
        catch
        {
            scored.Dispose();
            throw;
        }
    }

    /// <summary>Copies a saved scored-model folder's weights into <paramref name="model"/> (resume). The trunk's LM head is
    /// not part of a scored model's files (it never scores), so it is left as it is.</summary>
    public static void LoadInto(ScoredLM model, string folder)
    {
        if (model.Trunk.Lora is not null) { model.LoadWeights(folder); return; }   // LoRA: adapter + head only
        using var loaded = Load(folder);
        WeightCopy.Copy(loaded.state_dict(), model, folder, skip: name => name.StartsWith("lm_head", StringComparison.Ordinal) || name.Contains(".lm_head", StringComparison.Ordinal));
    }

    private static bool IsIgnorable(string name) =>
        name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal) || name.EndsWith(".attn.bias", StringComparison.Ordinal) ||
        name.EndsWith(".attn.masked_bias", StringComparison.Ordinal);
}
