using System.CommandLine;
using System.Globalization;
using FineAlign.Models;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign merge</c>: folds a PEFT LoRA adapter into its base model (W + scaling·B·A) and writes a plain Hugging Face
/// folder, as PEFT's merge_and_unload + save_pretrained do. Shapes are checked before anything is written, and the output
/// is written to a temporary folder renamed into place.
/// </summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var cmd = new RecipeCommand("merge",
            "Merge a LoRA adapter folder (adapter_config.json + adapter_model.safetensors, from finealign --use-peft or PEFT) into its base " +
            "model and save a plain Hugging Face model folder with the base's tokenizer files.");
        var model = cmd.Declare<string?>("--model", null, "Base model folder (default: the adapter's base_model_name_or_path).", alias: "-m");
        var adapter = cmd.Declare<string?>("--adapter", null, "Adapter folder. Required.");
        var outDir = cmd.Declare<string?>("--out", null, "Destination folder (created; replaced only if it is empty or a model folder). Required.", alias: "-o");
        var dtype = cmd.Declare("--dtype", "auto", $"Weight dtype to write: {ModelFolder.DTypeNames}, or auto = the base's torch_dtype.",
            check: v => v.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : ModelFolder.CheckDType(v));

        var runtime = RuntimeFlags.Declare(cmd);

        cmd.SetRecipeAction((recipe, ct) =>
        {
            runtime.Apply(recipe);
            string adapterDir = recipe.Get(adapter) ?? throw LogprobsCommand.Required("--adapter", "the LoRA adapter folder");
            string target = recipe.Get(outDir) ?? throw LogprobsCommand.Required("--out", "the destination folder");
            if (!Directory.Exists(adapterDir)) throw new FineAlignException($"{adapterDir}: adapter folder not found.");
            if (!Lora.IsAdapterFolder(adapterDir)) throw new FineAlignException($"{adapterDir}: not a PEFT adapter folder (no {Lora.ConfigFile}).");
            OutputCheck.Folder(target, "--out");
            string baseDir = recipe.Get(model) is string m ? ModelFolder.Resolve(m) : Lora.BaseFolder(adapterDir);
            var config = ModelConfig.Load(Path.Combine(baseDir, "config.json"));
            var dt = ModelFolder.ParseDType(recipe.Get(dtype)) ?? ModelFolder.ParseDType(config.TorchDtype) ?? TorchSharp.torch.ScalarType.Float32;
            var settings = Lora.ReadConfig(adapterDir);
            using var merged = ModelIO.LoadMerged(baseDir, adapterDir, dt);
            ct.ThrowIfCancellationRequested();
            ModelIO.Save(merged, target, baseDir);
            recipe.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"merged {adapterDir} (LoRA r {settings.R}, α {settings.Alpha}, {string.Join(",", settings.TargetModules)}) into {baseDir}; " +
                $"wrote {target} as {ModelFolder.DTypeName(dt)}"));
            return 0;
        });
        return cmd;
    }
}
