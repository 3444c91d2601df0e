using System.CommandLine;
using System.Globalization;
using FineAlign.Models;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign convert</c>: re-saves a model folder — another dtype, another shard size — with its tokenizer files.
/// Loading validates every tensor first, and <see cref="ModelIO.Save(CausalLM, string, string?, long)"/> writes to a
/// temporary folder renamed into place, so a bad input never leaves a half-written output folder.
/// </summary>
public static class ConvertCommand
{
    public static Command Create()
    {
        var cmd = new RecipeCommand("convert",
            "Re-save a Hugging Face model folder (config.json + safetensors; or a FineAlign checkpoint with a model/ subfolder) " +
            "in another dtype and/or shard size, copying the tokenizer and generation_config files. Pickle checkpoints " +
            "(pytorch_model.bin) are refused for safety.");
        var model = cmd.Declare<string?>("--model", null, "Source model folder. Required.", alias: "-m");
        var outDir = cmd.Declare<string?>("--out", null, "Destination folder (created; replaced only if it is empty or a model folder). Required.", alias: "-o");
        var dtype = cmd.Declare("--dtype", "auto", $"Weight dtype to write: {ModelFolder.DTypeNames}, or auto = the source's torch_dtype.",
            check: v => v.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : ModelFolder.CheckDType(v));
        var maxShard = cmd.Declare("--max-shard-size", "5GB",
            "Largest safetensors file before the weights are split into shards with an index, e.g. 500MB, 2GB, 1GiB (GB = 10^9 bytes, GiB = 2^30).",
            check: v => ModelFolder.ParseSize(v) is null ? "must be a positive size such as 500MB, 2GB or a byte count" : null);

        var runtime = RuntimeFlags.Declare(cmd);
        cmd.SetRecipeAction((recipe, ct) =>
        {
            runtime.Apply(recipe);
            string source = recipe.Get(model) ?? throw LogprobsCommand.Required("--model", "the source model folder");
            string target = recipe.Get(outDir) ?? throw LogprobsCommand.Required("--out", "the destination folder");
            long shardBytes = ModelFolder.ParseSize(recipe.Get(maxShard))!.Value;
            OutputCheck.Folder(target, "--out");

            string resolved = ModelFolder.Resolve(source);
            string dtypeName = recipe.Get(dtype);
            var config = ModelConfig.Load(Path.Combine(resolved, "config.json"));
            var dt = ModelFolder.ParseDType(dtypeName) ?? ModelFolder.ParseDType(config.TorchDtype) ?? TorchSharp.torch.ScalarType.Float32;
            ct.ThrowIfCancellationRequested();

            using var lm = ModelIO.Load(resolved, dt);
            ct.ThrowIfCancellationRequested();
            ModelIO.Save(lm, target, resolved, shardBytes);

            int shards = Directory.GetFiles(target, "*.safetensors").Length;
            recipe.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"converted {resolved} ({lm.Config.ModelType}, {lm.Config.ParameterCount():N0} parameters) to {target} as " +
                $"{ModelFolder.DTypeName(dt)} in {shards} safetensors file{(shards == 1 ? "" : "s")}"));
            return 0;
        });
        return cmd;
    }
}
