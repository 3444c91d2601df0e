using FineAlign.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>Builds models from a config: the right architecture, deterministic initial weights.</summary>
public static class ModelFactory
{
    /// <summary>A fresh fp32 model with HF-like initial weights drawn from <paramref name="seed"/>.</summary>
    public static CausalLM Create(ModelConfig config, long seed) => Create(config, seed, ScalarType.Float32);

    /// <summary>A fresh model in <paramref name="dtype"/> (weights drawn in fp32, then cast).</summary>
    public static CausalLM Create(ModelConfig config, long seed, ScalarType dtype)
    {
        var model = Construct(config, dtype);
        Initialize(model, seed);
        return model;
    }

    /// <summary>The architecture for <c>config.ModelType</c>, with TorchSharp's default initialisation.</summary>
    public static CausalLM Construct(ModelConfig config, ScalarType dtype = ScalarType.Float32)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new FineAlignException($"model dtype {dtype} is not supported (float32, float16, bfloat16).");
        EnsureFitsInMemory(config, dtype, "model config");
        return config.ModelType switch
        {
            "gpt2" => new Gpt2LMHeadModel(config, dtype),
            "llama" or "mistral" or "qwen2" => new LlamaForCausalLM(config, dtype),
            _ => throw new FineAlignException($"model_type '{config.ModelType}' is not supported (supported: {string.Join(", ", ModelConfig.SupportedTypes)})."),
        };
    }

    /// <summary>
    /// Refuses a config whose weights alone would not fit in this machine's memory, before anything is allocated:
    /// each size can be within its own limit while the product is terabytes, and libtorch would then fail with an
    /// allocator error (or the OS would kill the process) instead of a message naming the config.
    /// </summary>
    public static void EnsureFitsInMemory(ModelConfig config, ScalarType dtype, string source)
    {
        double bytes = (double)config.ParameterCount() * (dtype is ScalarType.Float32 ? 4 : dtype is ScalarType.Float64 ? 8 : 2);
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (available > 0 && bytes > available)
            throw new FineAlignException(
                $"{source}: the model's {config.ParameterCount():N0} parameters need {bytes / 1e9:F1} GB as {dtype}, more than this machine's " +
                $"{available / 1e9:F1} GB of memory (vocab_size {config.VocabSize}, hidden_size {config.HiddenSize}, {config.NumLayers} layers).");
    }

    /// <summary>
    /// transformers' _init_weights: weights ~ N(0, initializer_range = 0.02), biases 0, norm gains 1;
    /// GPT-2's residual projections (c_proj) use std / √(2·n_layer) (GPT-2 paper, §2.3).
    /// </summary>
    public static void Initialize(CausalLM model, long seed)
    {
        var c = model.Config;
        double std = c.Raw?["initializer_range"] is JsonValue v && v.TryGetValue(out double r) && r > 0 ? r : 0.02;
        using var gen = new Generator(unchecked((ulong)seed));
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (p.dim() == 1)
            {
                if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
                else p.fill_(1.0);
                continue;
            }
            double s = c.IsGpt2 && name.EndsWith("c_proj.weight", StringComparison.Ordinal) ? std / Math.Sqrt(2.0 * c.NumLayers) : std;
            using var w = empty(p.shape, ScalarType.Float32).normal_(0, s, gen);
            p.copy_(w);
        }
    }
}

/// <summary>Loading and saving Hugging Face model folders (config.json + safetensors).</summary>
public static class ModelIO
{
    /// <summary>transformers' default <c>max_shard_size</c> for save_pretrained.</summary>
    public const long DefaultMaxShardBytes = 5L * 1000 * 1000 * 1000;

    /// <summary>Tokenizer files copied next to saved weights.</summary>
    public static readonly string[] TokenizerFiles =
    {
        "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    };

    /// <summary>
    /// Loads <paramref name="folder"/>: config.json and model.safetensors (or a sharded set).
    /// Every parameter must be present with the configured shape; only known non-parameter buffers
    /// (GPT-2's attn.bias/masked_bias, rotary inv_freq, a tied lm_head copy) may be extra.
    /// </summary>
    public static CausalLM Load(string folder, ScalarType dtype = ScalarType.Float32)
    {
        if (!Directory.Exists(folder)) throw new FineAlignException($"{folder}: model folder not found.");
        if (Lora.IsAdapterFolder(folder) && !File.Exists(Path.Combine(folder, "config.json"))) return LoadMerged(Lora.BaseFolder(folder), folder, dtype);
        string configPath = Path.Combine(folder, "config.json");
        var config = ModelConfig.Load(configPath);
        ModelFactory.EnsureFitsInMemory(config, dtype, configPath);
        var model = ModelFactory.Construct(config, dtype);
        try
        {
            LoadInto(model, folder);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A PEFT adapter folder read as a model: its base (<paramref name="baseFolder"/>) with the adapter merged into the
    /// weights (<see cref="Lora.MergeInto"/>), a plain model — so every command that reads a model reads an adapter too.
    /// </summary>
    public static CausalLM LoadMerged(string baseFolder, string adapterFolder, ScalarType dtype = ScalarType.Float32)
    {
        var model = Load(baseFolder, ScalarType.Float32);
        try
        {
            Lora.MergeInto(model, adapterFolder);
            if (dtype != ScalarType.Float32) model.to(dtype);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The folder holding the tokenizer for <paramref name="folder"/>: itself, or an adapter's base when the adapter has none.</summary>
    public static string TokenizerFolder(string folder)
    {
        if (!Lora.IsAdapterFolder(folder) || TokenizerFiles.Any(f => f is "tokenizer.json" or "tokenizer.model" or "vocab.json" && File.Exists(Path.Combine(folder, f))))
            return folder;
        return Lora.BaseFolder(folder);
    }

    /// <summary>
    /// Copies the weights of <paramref name="folder"/> into an existing <paramref name="model"/> (converted to
    /// its dtype), with the same checks as <see cref="Load"/>: used to resume training from a checkpoint.
    /// </summary>
    public static void LoadInto(CausalLM model, string folder)
    {
        if (!Directory.Exists(folder)) throw new FineAlignException($"{folder}: model folder not found.");
        if (model.Lora is not null)
        {
            // A LoRA run's checkpoints hold the adapter only; the frozen base is already in memory.
            Lora.LoadAdapterWeights(model, folder);
            return;
        }
        var config = model.Config;
        using var ck = SafeTensorsCheckpoint.Open(folder);
        var used = new HashSet<string>(StringComparer.Ordinal);
        using (no_grad())
        {
            foreach (var (name, p) in model.named_parameters())
            {
                string key = FindKey(ck, config, name)
                    ?? throw new FineAlignException($"{folder}: tensor '{name}' (shape [{string.Join(", ", p.shape)}]) is missing from the checkpoint.");
                var e = ck.Entry(key);
                if (!e.Shape.SequenceEqual(p.shape))
                    throw new FineAlignException($"{ck.FileOf(key)}: tensor '{key}' has shape [{string.Join(", ", e.Shape)}] but config.json implies [{string.Join(", ", p.shape)}].");
                if (e.DType is not ("F32" or "F16" or "BF16" or "F64"))
                    throw new FineAlignException($"{ck.FileOf(key)}: tensor '{key}' has dtype {e.DType}; model weights must be floating point.");
                using var t = ck.Read(key, p.dtype);
                p.copy_(t);
                used.Add(key);
            }
        }
        foreach (var name in ck.Names)
        {
            if (used.Contains(name) || IsKnownBuffer(name, config)) continue;
            throw new FineAlignException($"{ck.FileOf(name)}: unexpected tensor '{name}' for a {config.ModelType} model with this config.json.");
        }
    }

    // The original OpenAI GPT-2 checkpoints on the hub name tensors without the "transformer." prefix.
    private static string? FindKey(SafeTensorsCheckpoint ck, ModelConfig config, string name)
    {
        if (ck.Contains(name)) return name;
        const string prefix = "transformer.";
        if (config.IsGpt2 && name.StartsWith(prefix, StringComparison.Ordinal) && ck.Contains(name[prefix.Length..]))
            return name[prefix.Length..];
        return null;
    }

    private static bool IsKnownBuffer(string name, ModelConfig config)
    {
        if (name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)) return true;
        if (config.TieWordEmbeddings && name == "lm_head.weight") return true;
        return config.IsGpt2 && (name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal));
    }

    /// <summary>
    /// Saves <paramref name="model"/> as a Hugging Face folder: config.json (torch_dtype = the
    /// weights' dtype), model.safetensors with HF names (a tied lm_head is omitted), or shards plus an
    /// index above <paramref name="maxShardBytes"/>, generation_config.json, and the tokenizer files
    /// found in <paramref name="tokenizerSourceFolder"/>. Everything is written to a temp folder beside
    /// the target and renamed into place, so a crash never leaves a half-written model folder.
    /// An existing target is replaced only if it is empty or itself a model folder (has config.json).
    /// </summary>
    public static void Save(CausalLM model, string folder, string? tokenizerSourceFolder = null, long maxShardBytes = DefaultMaxShardBytes)
        => Save(model, folder, tokenizerSourceFolder, null, maxShardBytes);

    /// <summary>As above; <paramref name="tokenizer"/> (when given) writes its own files, e.g. the built-in byte tokenizer.</summary>
    public static void Save(CausalLM model, string folder, TextTokenizer tokenizer, long maxShardBytes = DefaultMaxShardBytes)
        => Save(model, folder, null, tokenizer, maxShardBytes);

    private static void Save(CausalLM model, string folder, string? tokenizerSourceFolder, TextTokenizer? tokenizer, long maxShardBytes)
    {
        if (tokenizerSourceFolder is not null && !Directory.Exists(tokenizerSourceFolder))
            throw new FineAlignException($"{tokenizerSourceFolder}: tokenizer source folder not found.");
        if (model.Lora is not null)
        {
            // A LoRA model saves as a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) and its tokenizer.
            WriteFolder(folder, tmp =>
            {
                Lora.WriteAdapter(model, tmp);
                tokenizer?.Save(tmp);
                if (tokenizerSourceFolder is not null) CopyTokenizerFiles(tokenizerSourceFolder, tmp);
            });
            return;
        }
        WriteFolder(folder, tmp =>
        {
            var state = model.state_dict();
            ScalarType dtype = state.Values.FirstOrDefault(t => t.is_floating_point())?.dtype ?? ScalarType.Float32;
            var json = model.Config.ToJson();
            json["torch_dtype"] = DtypeName(dtype);
            var indented = new JsonSerializerOptions { WriteIndented = true };
            File.WriteAllText(Path.Combine(tmp, "config.json"), json.ToJsonString(indented));
            SafeTensors.SaveSharded(tmp, state, maxShardBytes);

            string? genSource = tokenizerSourceFolder is null ? null : Path.Combine(tokenizerSourceFolder, "generation_config.json");
            if (genSource is not null && File.Exists(genSource))
                File.Copy(genSource, Path.Combine(tmp, "generation_config.json"));
            else if (GenerationConfig(model.Config) is JsonObject gen)
                File.WriteAllText(Path.Combine(tmp, "generation_config.json"), gen.ToJsonString(indented));

            tokenizer?.Save(tmp);
            if (tokenizerSourceFolder is not null) CopyTokenizerFiles(tokenizerSourceFolder, tmp);
        });
    }

    private static void CopyTokenizerFiles(string from, string to)
    {
        foreach (var f in TokenizerFiles)
        {
            string src = Path.Combine(from, f);
            if (File.Exists(src)) File.Copy(src, Path.Combine(to, f));
        }
    }

    /// <summary><c>torch_dtype</c> as config.json spells it.</summary>
    public static string DtypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => "float16", ScalarType.BFloat16 => "bfloat16", _ => "float32",
    };

    /// <summary>
    /// Writes a model folder all-or-nothing: <paramref name="fill"/> writes into a hidden temp folder beside
    /// the target, which then replaces the target by rename, so a crash never leaves a half-written model.
    /// An existing target is replaced only if it is empty or itself a model folder (has config.json).
    /// </summary>
    /// <summary>
    /// Removes the hidden folders a <see cref="WriteFolder"/> killed mid-way leaves in <paramref name="parent"/>
    /// (".NAME.tmp-*" being filled, ".NAME.old-*" being replaced). Call it only where the folder will be written again
    /// (a resumed run redoes its final save), since a kill between the two renames leaves the only copies there.
    /// </summary>
    public static void CleanInterruptedWrites(string parent)
    {
        if (!Directory.Exists(parent)) return;
        foreach (var dir in Directory.GetDirectories(parent, ".*"))
            if (InterruptedWrite.IsMatch(Path.GetFileName(dir))) Directory.Delete(dir, true);
    }

    private static readonly System.Text.RegularExpressions.Regex InterruptedWrite = new(@"^\..+\.(tmp|old)-[0-9a-f]{12}$");

    public static void WriteFolder(string folder, Action<string> fill)
    {
        string target = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(target) ?? throw new FineAlignException($"{folder}: cannot save a model to a file-system root.");
        if (File.Exists(target)) throw new FineAlignException($"{folder}: exists and is a file, not a folder.");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any() && !File.Exists(Path.Combine(target, "config.json"))
            && !Lora.IsAdapterFolder(target))
            throw new FineAlignException($"{folder}: exists, is not empty and is not a model folder; refusing to replace it.");
        Directory.CreateDirectory(parent);

        string name = Path.GetFileName(target);
        string tmp = Path.Combine(parent, $".{name}.tmp-{Guid.NewGuid().ToString("N")[..12]}");
        Directory.CreateDirectory(tmp);
        try
        {
            fill(tmp);
            if (Directory.Exists(target))
            {
                string old = Path.Combine(parent, $".{name}.old-{Guid.NewGuid().ToString("N")[..12]}");
                Directory.Move(target, old);
                Directory.Move(tmp, target);
                Directory.Delete(old, true);
            }
            else
            {
                Directory.Move(tmp, target);
            }
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    private static JsonObject? GenerationConfig(ModelConfig c)
    {
        if (c.BosTokenId is null && c.EosTokenIds.Length == 0 && c.PadTokenId is null) return null;
        var o = new JsonObject();
        if (c.BosTokenId is int b) o["bos_token_id"] = b;
        if (c.EosTokenIds.Length == 1) o["eos_token_id"] = c.EosTokenIds[0];
        else if (c.EosTokenIds.Length > 1) o["eos_token_id"] = new JsonArray(c.EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (c.PadTokenId is int p) o["pad_token_id"] = p;
        return o;
    }
}
