using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// LoRA settings under PEFT's LoraConfig names (r, lora_alpha, lora_dropout, target_modules, use_rslora).
/// <see cref="TargetModules"/> holds module-name suffixes (q_proj, …), <c>all-linear</c>, or one regular expression
/// matched against the whole module name (PEFT's rule for a string).
/// </summary>
public sealed record LoraSettings
{
    public static readonly string[] DefaultTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    public const string AllLinear = "all-linear";

    public int R { get; init; } = 16;
    public double Alpha { get; init; } = 32;
    public double Dropout { get; init; } = 0.05;
    public IReadOnlyList<string> TargetModules { get; init; } = DefaultTargets;
    /// <summary>rsLoRA (Kalajdzievski 2023, arXiv 2312.03732): scale α/√r instead of α/r.</summary>
    public bool UseRslora { get; init; }
    /// <summary>Written to adapter_config.json so PEFT, vLLM and <c>finealign merge</c> find the base.</summary>
    public string? BaseModelNameOrPath { get; init; }

    public double Scaling => UseRslora ? Alpha / Math.Sqrt(R) : Alpha / R;

    public void Validate(string source = "lora")
    {
        if (R < 1) throw new FineAlignException($"{source}: lora_r = {R}: the adapter rank must be at least 1.");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) throw new FineAlignException($"{source}: lora_alpha = {Alpha}: must be a positive number.");
        if (!(Dropout >= 0 && Dropout < 1)) throw new FineAlignException($"{source}: lora_dropout = {Dropout}: must be in [0, 1).");
        if (TargetModules.Count == 0 || TargetModules.Any(string.IsNullOrWhiteSpace))
            throw new FineAlignException($"{source}: lora_target_modules is empty; name modules such as q_proj,v_proj or use all-linear.");
    }

    /// <summary>Parses a --lora-target-modules value: comma-separated names or all-linear.</summary>
    public static IReadOnlyList<string> ParseTargets(string text)
        => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

/// <summary>The adapters live on a model: their settings, the module names they sit on, and the on/off switch.</summary>
public sealed class LoraState
{
    internal LoraState(LoraSettings settings, IReadOnlyList<string> modules) { Settings = settings; Modules = modules; }

    public LoraSettings Settings { get; }
    /// <summary>Full module names carrying an adapter (model.layers.0.self_attn.q_proj, …).</summary>
    public IReadOnlyList<string> Modules { get; }
    /// <summary>False: every projection computes the base model alone (the reference policy).</summary>
    public bool Enabled { get; internal set; } = true;
}

/// <summary>
/// LoRA (Hu et al. 2021, arXiv 2106.09685) in PEFT's format: attach adapters to a model's named projections, save and
/// load <c>adapter_config.json</c> + <c>adapter_model.safetensors</c> with PEFT's tensor names
/// (<c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>), merge an adapter into the base, and view
/// the base with the adapters off (the reference model without a second copy of the weights).
/// </summary>
public static class Lora
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    private const string Prefix = "base_model.model.";

    /// <summary>Whether <paramref name="folder"/> holds a PEFT adapter.</summary>
    public static bool IsAdapterFolder(string folder) => File.Exists(Path.Combine(folder, ConfigFile));

    /// <summary>The decoder's named projections: (full module name, module).</summary>
    public static IEnumerable<(string Name, Projection Module)> Projections(CausalLM model)
        => model.named_modules().Where(m => m.module is Projection).Select(m => (m.name, (Projection)m.module));

    /// <summary>
    /// Attaches an adapter to every projection <paramref name="settings"/> names and freezes everything else (base
    /// weights, norms, embeddings). A is drawn from <paramref name="seed"/>, B starts at 0, so the model's output is
    /// unchanged until the first update. Throws a one-line error when a target names no module of this model.
    /// </summary>
    public static LoraState Apply(CausalLM model, LoraSettings settings, long seed)
    {
        settings.Validate();
        if (model.Lora is not null) throw new FineAlignException("the model already carries LoRA adapters.");
        var projections = Projections(model).ToList();
        if (projections.Count == 0)
            throw new FineAlignException($"LoRA is supported for llama, mistral and qwen2 models; this is a {model.Config.ModelType} model.");
        var chosen = Select(projections.Select(p => p.Name).ToList(), settings.TargetModules, model.Config.ModelType);
        var state = new LoraState(settings with { TargetModules = ExpandedTargets(chosen) }, chosen);
        using var gen = new Generator(unchecked((ulong)seed));
        foreach (var p in model.parameters()) p.requires_grad = false;
        foreach (var (name, module) in projections)
            if (chosen.Contains(name)) module.Attach(settings.R, settings.Scaling, settings.Dropout, state, gen);
        model.Lora = state;
        return state;
    }

    /// <summary>The module names the targets select (PEFT's rule: a list matches a name or a ".name" suffix; one string with
    /// regex characters matches the whole name); every listed target must select something.</summary>
    private static List<string> Select(List<string> names, IReadOnlyList<string> targets, string modelType)
    {
        var shortNames = names.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().ToList();
        if (targets.Count == 1 && targets[0].Equals(LoraSettings.AllLinear, StringComparison.OrdinalIgnoreCase)) return names;
        if (targets.Count == 1 && targets[0].IndexOfAny(['*', '(', '[', '|', '\\', '^', '$', '+', '?']) >= 0)
        {
            Regex re;
            try { re = new Regex("^(?:" + targets[0] + ")$", RegexOptions.CultureInvariant); }
            catch (ArgumentException e) { throw new FineAlignException($"lora_target_modules '{targets[0]}': not a valid regular expression ({e.Message})."); }
            var hit = names.Where(n => re.IsMatch(n)).ToList();
            if (hit.Count == 0) throw NoMatch(targets[0], shortNames, modelType);
            return hit;
        }
        var result = new List<string>();
        foreach (var t in targets)
        {
            var hit = names.Where(n => n == t || n.EndsWith("." + t, StringComparison.Ordinal)).ToList();
            if (hit.Count == 0) throw NoMatch(t, shortNames, modelType);
            result.AddRange(hit);
        }
        return names.Where(result.Contains).ToList();
    }

    private static FineAlignException NoMatch(string target, List<string> shortNames, string modelType) =>
        new($"lora_target_modules: '{target}' names no module of this {modelType} model (its linear layers: {string.Join(", ", shortNames)}; or all-linear).");

    // As PEFT saves an expanded all-linear: the distinct short names.
    private static List<string> ExpandedTargets(IEnumerable<string> modules) => modules.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().ToList();

    /// <summary>The adapters' tensors under PEFT's names (prefix base_model.model., no adapter name).</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> AdapterTensors(CausalLM model)
    {
        foreach (var (name, module) in Projections(model))
            if (module.Adapter is var (a, b))
            {
                yield return new(Prefix + name + ".lora_A.weight", a);
                yield return new(Prefix + name + ".lora_B.weight", b);
            }
    }

    /// <summary>PEFT's adapter_config.json for <paramref name="state"/> (fields PEFT 0.13+ writes; loaders ignore unknown ones).</summary>
    public static JsonObject AdapterConfig(LoraState state)
    {
        var s = state.Settings;
        return new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = s.BaseModelNameOrPath,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = s.Alpha,
            ["lora_dropout"] = s.Dropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = s.R,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = new JsonArray(s.TargetModules.Select(t => (JsonNode)t).ToArray()),
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = false,
            ["use_rslora"] = s.UseRslora,
        };
    }

    /// <summary>Writes adapter_config.json and adapter_model.safetensors into <paramref name="folder"/> (which exists).</summary>
    public static void WriteAdapter(CausalLM model, string folder)
    {
        var state = model.Lora ?? throw new FineAlignException("the model has no LoRA adapters to save.");
        File.WriteAllText(Path.Combine(folder, ConfigFile), AdapterConfig(state).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        SafeTensors.Save(Path.Combine(folder, WeightsFile), AdapterTensors(model).Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach())),
                         new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>Reads adapter_config.json (PEFT's or ours); refuses what is not a plain LoRA adapter.</summary>
    public static LoraSettings ReadConfig(string folder)
    {
        string path = Path.Combine(folder, ConfigFile);
        if (!File.Exists(path)) throw new FineAlignException($"{folder}: not a PEFT adapter folder (no {ConfigFile}).");
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new FineAlignException($"{path}: not a JSON object."); }
        catch (JsonException e) { throw new FineAlignException($"{path}: invalid JSON ({e.Message})."); }
        string Str(string k) => o[k] is JsonValue v && v.TryGetValue(out string? s) ? s : "";
        bool True(string k) => o[k] is JsonValue v && v.TryGetValue(out bool b) && b;
        bool NonEmpty(string k) => o[k] is JsonObject { Count: > 0 } || o[k] is JsonArray { Count: > 0 };
        if (!Str("peft_type").Equals("LORA", StringComparison.OrdinalIgnoreCase))
            throw new FineAlignException($"{path}: field 'peft_type' is '{Str("peft_type")}'; only LORA adapters are supported.");
        if (True("use_dora")) throw new FineAlignException($"{path}: field 'use_dora': DoRA adapters are not supported.");
        if (True("fan_in_fan_out")) throw new FineAlignException($"{path}: field 'fan_in_fan_out' = true (GPT-2 Conv1D layers) is not supported.");
        if (NonEmpty("rank_pattern") || NonEmpty("alpha_pattern"))
            throw new FineAlignException($"{path}: fields 'rank_pattern'/'alpha_pattern' (per-module ranks) are not supported.");
        if (Str("bias") is not ("" or "none")) throw new FineAlignException($"{path}: field 'bias' = '{Str("bias")}': only 'none' is supported.");
        if (NonEmpty("modules_to_save")) throw new FineAlignException($"{path}: field 'modules_to_save' is not supported (fully trained extra modules).");
        int r = o["r"] is JsonValue rv && rv.TryGetValue(out double rd) ? (int)rd : throw new FineAlignException($"{path}: field 'r' is missing.");
        double alpha = o["lora_alpha"] is JsonValue av && av.TryGetValue(out double ad) ? ad : 8;   // PEFT's default lora_alpha
        double dropout = o["lora_dropout"] is JsonValue dv && dv.TryGetValue(out double dd) ? dd : 0;
        IReadOnlyList<string> targets = o["target_modules"] switch
        {
            JsonArray a => a.Select(n => n?.GetValue<string>() ?? "").ToList(),
            JsonValue v when v.TryGetValue(out string? s) => [s],
            _ => throw new FineAlignException($"{path}: field 'target_modules' is missing."),
        };
        var settings = new LoraSettings
        {
            R = r, Alpha = alpha, Dropout = dropout, TargetModules = targets, UseRslora = True("use_rslora"),
            BaseModelNameOrPath = Str("base_model_name_or_path") is { Length: > 0 } b ? b : null,
        };
        settings.Validate(path);
        return settings;
    }

    /// <summary>The adapter's (A, B) per module name, checked against <paramref name="model"/>'s projection shapes.</summary>
    private static Dictionary<string, (Tensor A, Tensor B)> ReadWeights(CausalLM model, string folder, LoraSettings settings)
    {
        string path = Path.Combine(folder, WeightsFile);
        if (!File.Exists(path))
            throw new FineAlignException(File.Exists(Path.Combine(folder, "adapter_model.bin"))
                ? $"{folder}: only adapter_model.bin (pickle) is present; pickle files are not loaded for safety — convert it to {WeightsFile}."
                : $"{folder}: {WeightsFile} is missing.");
        var tensors = SafeTensors.Load(path, ScalarType.Float32);
        var projections = Projections(model).ToDictionary(p => p.Name, p => p.Module);
        var result = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
        foreach (var (key, t) in tensors)
        {
            // PEFT saves without the adapter name; some tools keep ".default".
            string k = key.Replace(".lora_A.default.weight", ".lora_A.weight").Replace(".lora_B.default.weight", ".lora_B.weight");
            bool isA = k.EndsWith(".lora_A.weight", StringComparison.Ordinal), isB = k.EndsWith(".lora_B.weight", StringComparison.Ordinal);
            if (!isA && !isB) throw new FineAlignException($"{path}: unexpected tensor '{key}' (only lora_A/lora_B weights are supported).");
            string module = k[..^".lora_A.weight".Length];
            if (module.StartsWith(Prefix, StringComparison.Ordinal)) module = module[Prefix.Length..];
            if (!projections.TryGetValue(module, out var proj))
                throw new FineAlignException($"{path}: tensor '{key}' is for module '{module}', which this {model.Config.ModelType} model " +
                                             $"({model.Config.NumLayers} layers) does not have; was the adapter trained on another base model?");
            long[] expected = isA ? [settings.R, proj.InFeatures] : [proj.OutFeatures, settings.R];
            if (!t.shape.SequenceEqual(expected))
                throw new FineAlignException($"{path}: tensor '{key}' has shape [{string.Join(", ", t.shape)}] but the base model implies " +
                                             $"[{string.Join(", ", expected)}] (r = {settings.R}); the adapter was trained on a base model of another shape.");
            var cur = result.GetValueOrDefault(module);
            result[module] = isA ? (t, cur.Item2) : (cur.Item1, t);
        }
        foreach (var (module, (a, b)) in result)
            if (a is null || b is null) throw new FineAlignException($"{path}: module '{module}' has only one of lora_A/lora_B.");
        if (result.Count == 0) throw new FineAlignException($"{path}: holds no LoRA tensors.");
        return result;
    }

    /// <summary>Copies an adapter folder's weights into the adapters already attached to <paramref name="model"/> (resume).</summary>
    public static void LoadAdapterWeights(CausalLM model, string folder)
    {
        var state = model.Lora ?? throw new FineAlignException("the model has no LoRA adapters to load into.");
        var settings = ReadConfig(folder);
        if (settings.R != state.Settings.R) throw new FineAlignException($"{folder}: adapter rank r = {settings.R}, but this run uses r = {state.Settings.R}.");
        var weights = ReadWeights(model, folder, settings);
        var missing = state.Modules.Where(m => !weights.ContainsKey(m)).ToList();
        if (missing.Count > 0 || weights.Count != state.Modules.Count)
            throw new FineAlignException($"{folder}: the adapter covers other modules than this run's ({(missing.Count > 0 ? "missing " + missing[0] : "extra modules")}).");
        var projections = Projections(model).ToDictionary(p => p.Name, p => p.Module);
        using var _ = no_grad();
        foreach (var (module, (a, b)) in weights)
        {
            var (pa, pb) = projections[module].Adapter!.Value;
            pa.copy_(a); pb.copy_(b);
            a.Dispose(); b.Dispose();
        }
    }

    /// <summary>
    /// Folds the adapter in <paramref name="adapterFolder"/> into <paramref name="model"/>'s base weights:
    /// W ← W + scaling·B·A (computed in fp32, stored in W's dtype). The public merge used by <c>finealign merge</c>,
    /// by loading an adapter folder as a model, and by exporters. Shapes are checked against the base first.
    /// </summary>
    public static LoraSettings MergeInto(CausalLM model, string adapterFolder)
    {
        if (model.Lora is not null) throw new FineAlignException("merge an adapter into a plain base model (this one carries live adapters).");
        var settings = ReadConfig(adapterFolder);
        var weights = ReadWeights(model, adapterFolder, settings);
        var projections = Projections(model).ToDictionary(p => p.Name, p => p.Module);
        using var _ = no_grad();
        foreach (var (module, (a, b)) in weights)
        {
            var w = projections[module].Weight;
            using var delta = b.matmul(a).mul_(settings.Scaling);
            using var merged = w.to(ScalarType.Float32).add_(delta);
            w.copy_(merged);
            a.Dispose(); b.Dispose();
        }
        return settings;
    }

    /// <summary>A live adapter folded into a plain tensor map under HF names (base weights + scaling·B·A), for a merged save.</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> MergedTensors(CausalLM model)
    {
        var adapters = Projections(model).Where(p => p.Module.Adapter is not null).ToDictionary(p => p.Name + ".weight", p => p.Module);
        foreach (var (name, t) in model.state_dict())
        {
            if (name.Contains(".lora_A.", StringComparison.Ordinal) || name.Contains(".lora_B.", StringComparison.Ordinal)) continue;
            if (adapters.TryGetValue(name, out var proj) && model.Lora!.Enabled)
            {
                var (a, b) = proj.Adapter!.Value;
                using var _ = no_grad();
                yield return new(name, (t.to(ScalarType.Float32) + b.matmul(a) * proj.Scaling).to(t.dtype));
            }
            else yield return new(name, t);
        }
    }

    /// <summary>
    /// Stores the frozen base in <paramref name="dtype"/> (e.g. bf16: half the memory, no fp32 master needed since it is not
    /// trained) while the adapters stay fp32 master weights with their exact values.
    /// </summary>
    public static void CastBase(CausalLM model, ScalarType dtype)
    {
        if (model.Lora is null) throw new FineAlignException("CastBase is for a model with LoRA adapters.");
        var saved = Projections(model).Where(p => p.Module.Adapter is not null)
            .Select(p => (p.Module, A: p.Module.Adapter!.Value.A.detach().clone(), B: p.Module.Adapter!.Value.B.detach().clone())).ToList();
        model.to(dtype);
        foreach (var (module, a, b) in saved)
        {
            module.RestoreAdapter(a, b);
            a.Dispose(); b.Dispose();
        }
        foreach (var (name, p) in model.named_parameters())
            p.requires_grad = name.Contains(".lora_A.", StringComparison.Ordinal) || name.Contains(".lora_B.", StringComparison.Ordinal);
    }

    /// <summary>The base model of <paramref name="adapterFolder"/> as its config names it: a local folder (absolute, relative to
    /// the working directory or to the adapter folder).</summary>
    public static string BaseFolder(string adapterFolder, string? overrideBase = null)
    {
        var settings = ReadConfig(adapterFolder);
        string? b = overrideBase ?? settings.BaseModelNameOrPath;
        if (b is null) throw new FineAlignException($"{Path.Combine(adapterFolder, ConfigFile)}: field 'base_model_name_or_path' is empty; pass the base model folder (--model).");
        foreach (var candidate in new[] { b, Path.Combine(adapterFolder, b) })
            if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
        throw new FineAlignException($"{Path.Combine(adapterFolder, ConfigFile)}: base model '{b}' is not a local model folder (config.json); " +
                                     "download it or pass the base folder (--model).");
    }

    /// <summary>
    /// The base model with the adapters off: the frozen reference of DPO/KTO/PPO/… without a second copy of the weights.
    /// It owns no parameters (so freezing it cannot freeze the adapters), runs its forward in eval mode, and disposing it
    /// leaves the policy alone.
    /// </summary>
    public static CausalLM AdapterOff(CausalLM policy)
    {
        if (policy.Lora is null) throw new FineAlignException("the model has no LoRA adapters to switch off.");
        return new AdapterOffModel(policy);
    }

    /// <summary>Whether <paramref name="model"/> is a view of another model's base (see <see cref="AdapterOff"/>).</summary>
    public static bool IsAdapterOffView(CausalLM model) => model is AdapterOffModel;

    /// <summary>The model an <see cref="AdapterOff"/> view reads its base weights from; null for any other model.</summary>
    internal static CausalLM? ViewedPolicy(CausalLM model) => model is AdapterOffModel view ? view.Policy : null;

    private sealed class AdapterOffModel : CausalLM
    {
        private readonly CausalLM _policy;
        public CausalLM Policy => _policy;

        // Not registered (no RegisterComponents): parameters() is empty and Dispose does not reach the policy.
        public AdapterOffModel(CausalLM policy) : base("AdapterOff", policy.Config) => _policy = policy;

        public override Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
        {
            var state = _policy.Lora!;
            bool wasTraining = _policy.training, wasEnabled = state.Enabled;
            if (wasTraining) _policy.eval();
            state.Enabled = false;
            try { return _policy.ForwardHidden(inputIds, attentionMask, cache); }
            finally
            {
                state.Enabled = wasEnabled;
                if (wasTraining) _policy.train();
            }
        }

        public override Tensor LmHead(Tensor hidden) => _policy.LmHead(hidden);

        public override Tensor DecodeLmHead(Tensor hidden, KvCache cache) => _policy.DecodeLmHead(hidden, cache);
    }
}
