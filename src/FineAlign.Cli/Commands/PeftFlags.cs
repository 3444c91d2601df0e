using FineAlign.Models;
using FineAlign.Training;
using System.CommandLine;

namespace FineAlign.Cli.Commands;

/// <summary>
/// The real-scale training options every trainer shares, under TRL/PEFT names: LoRA (--use-peft, --lora-r, --lora-alpha,
/// --lora-dropout, --lora-target-modules, --use-rslora), --bf16, --gradient-checkpointing and --device. Declared once
/// here; <see cref="Prepare"/> hands the model to <see cref="ModelSetup.Prepare"/>, the library's single seam.
/// </summary>
internal sealed class PeftFlags
{
    public required Option<bool> UsePeft { get; init; }
    public required Option<int> LoraR { get; init; }
    public required Option<double> LoraAlpha { get; init; }
    public required Option<double> LoraDropout { get; init; }
    public required Option<string> LoraTargetModules { get; init; }
    public required Option<bool> UseRslora { get; init; }
    public required Option<bool> Bf16 { get; init; }
    public required Option<bool> GradientCheckpointing { get; init; }
    public required Option<string> Device { get; init; }

    public static PeftFlags Declare(RecipeCommand cmd) => new()
    {
        UsePeft = cmd.Declare("--use-peft", false, "Train LoRA adapters instead of all weights; the model is saved as a PEFT adapter folder " +
                                                   "(adapter_config.json + adapter_model.safetensors) and the reference is the base with the adapter off."),
        LoraR = cmd.Declare("--lora-r", 16, "LoRA rank r.", check: v => v >= 1 ? null : "must be at least 1 (the adapter rank)"),
        LoraAlpha = cmd.Declare("--lora-alpha", 32.0, "LoRA α: the update is scaled by α/r.", check: v => v > 0 ? null : "must be positive"),
        LoraDropout = cmd.Declare("--lora-dropout", 0.05, "Dropout on the adapter's input.", check: v => v is >= 0 and < 1 ? null : "must be in [0, 1)"),
        LoraTargetModules = cmd.Declare("--lora-target-modules", string.Join(",", LoraSettings.DefaultTargets),
            "Comma-separated projection names that get adapters (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj), or all-linear."),
        UseRslora = cmd.Declare("--use-rslora", false, "rsLoRA: scale by α/√r instead of α/r."),
        Bf16 = cmd.Declare("--bf16", false, "bf16 mixed precision: bf16 matmuls, fp32 master weights, optimizer, softmax and losses (with --use-peft the frozen base is stored in bf16)."),
        GradientCheckpointing = cmd.Declare("--gradient-checkpointing", false, "Recompute each decoder layer in backward instead of storing its activations (less memory, ~1/3 more compute)."),
        Device = cmd.Declare("--device", "cpu", "cpu, cuda or cuda:N. Only cpu is tested: no CUDA build of TorchSharp is available here.",
            check: v => System.Text.RegularExpressions.Regex.IsMatch(v, "^(cpu|cuda(:[0-9]+)?)$") ? null : "must be cpu, cuda or cuda:N"),
    };

    /// <summary>The --bf16/--gradient-checkpointing/--device part of <paramref name="options"/>.</summary>
    public TrainingOptions Apply(Recipe r, TrainingOptions options) => options with
    {
        Bf16 = r.Get(Bf16), GradientCheckpointing = r.Get(GradientCheckpointing), Device = r.Get(Device),
    };

    /// <summary>LoRA settings when --use-peft is on, else null; <paramref name="baseFolder"/> goes to base_model_name_or_path.</summary>
    public LoraSettings? Lora(Recipe r, string? baseFolder)
    {
        if (!r.Get(UsePeft)) return null;
        if (baseFolder is null)
            throw new FineAlignException("--use-peft needs --model: adapters are trained on a saved base model (a fresh --init model has no base folder to point to).");
        var s = new LoraSettings
        {
            R = r.Get(LoraR), Alpha = r.Get(LoraAlpha), Dropout = r.Get(LoraDropout), UseRslora = r.Get(UseRslora),
            TargetModules = LoraSettings.ParseTargets(r.Get(LoraTargetModules)), BaseModelNameOrPath = Path.GetFullPath(baseFolder),
        };
        s.Validate("--lora-*");
        return s;
    }

    /// <summary>
    /// The dtype to load the base in: bf16 with --use-peft --bf16 (the frozen base is stored in bf16 anyway), so a 0.5B
    /// model never exists as fp32 weights (2 GB) on the way to its bf16 copy (1 GB); the same values as loading fp32 and casting.
    /// </summary>
    public TorchSharp.torch.ScalarType LoadDtype(Recipe r) =>
        r.Get(UsePeft) && r.Get(Bf16) ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32;

    /// <summary>Makes <paramref name="model"/> ready for training (LoRA, bf16, checkpointing, device); warnings go to stderr.</summary>
    public CausalLM Prepare(Recipe r, CausalLM model, string? baseFolder, long seed)
    {
        var options = Apply(r, new TrainingOptions());
        return ModelSetup.Prepare(model, options, Lora(r, baseFolder), seed, m => r.Error.WriteLine("warning: " + m));
    }

    /// <summary>One line for the run's header, or "" when nothing is on.</summary>
    public string Describe(Recipe r)
    {
        var parts = new List<string>();
        if (r.Get(UsePeft)) parts.Add($"LoRA r {r.Get(LoraR)}, α {r.Get(LoraAlpha)}, dropout {r.Get(LoraDropout)} on {r.Get(LoraTargetModules)}");
        if (r.Get(Bf16)) parts.Add("bf16 mixed precision");
        if (r.Get(GradientCheckpointing)) parts.Add("gradient checkpointing");
        if (r.Get(Device) != "cpu") parts.Add("device " + r.Get(Device));
        return parts.Count == 0 ? "" : "; " + string.Join(", ", parts);
    }
}
