using System.CommandLine;
using System.Globalization;
using FineAlign.Models;
using FineAlign.Models.Gguf;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign export-gguf</c>: writes a Llama/Mistral/Qwen2 model folder as one GGUF v3 file for llama.cpp, Ollama and
/// LM Studio (see docs/GGUF.md). The file is written to a temporary sibling and renamed, so a failure leaves no half file.
/// </summary>
public static class ExportGgufCommand
{
    public static Command Create()
    {
        var cmd = new RecipeCommand("export-gguf",
            "Export a Hugging Face model folder (llama, mistral or qwen2; config.json + safetensors + tokenizer.json) as a GGUF v3 " +
            "file that llama.cpp, Ollama and LM Studio load: llama.cpp's tensor names and q/k layout, architecture metadata, " +
            "vocabulary, special tokens and chat template. Tokenizers whose pre-tokeniser llama.cpp does not know are refused.");
        var model = cmd.Declare<string?>("--model", null, "Model folder (or a FineAlign checkpoint with a model/ subfolder). Required.", alias: "-m");
        var outFile = cmd.Declare<string?>("--out", null, "GGUF file to write, e.g. model.gguf (replaced if it exists). Required.", alias: "-o");
        var type = cmd.Declare("--type", "f32", "Type of the weight matrices: f32 (exact), f16 or bf16 (half the size). Norms and biases stay f32.",
            check: v => v?.Trim().ToLowerInvariant() is "f32" or "f16" or "bf16" or "float32" or "float16" or "bfloat16" ? null : "must be f32, f16 or bf16");
        var adapter = cmd.Declare<string?>("--adapter", null, "PEFT LoRA adapter folder merged into --model before the export (W + scaling·B·A), as `finealign merge` does.");
        var runtime = RuntimeFlags.Declare(cmd);

        cmd.SetRecipeAction((recipe, ct) =>
        {
            string source = recipe.Get(model) ?? throw LogprobsCommand.Required("--model", "the model folder to export");
            string target = recipe.Get(outFile) ?? throw LogprobsCommand.Required("--out", "the GGUF file to write");
            if (Directory.Exists(target)) throw new FineAlignException($"--out {target}: is a folder; give a file name such as model.gguf.");
            OutputCheck.Folder(Path.GetDirectoryName(Path.GetFullPath(target))!, "--out");
            var ggmlType = GgufExporter.ParseType(recipe.Get(type));
            runtime.Apply(recipe);

            using var lm = ModelFolder.LoadModel(source, TorchSharp.torch.ScalarType.Float32, out string resolved);
            ct.ThrowIfCancellationRequested();
            if (recipe.Get(adapter) is string adapterDir)
            {
                if (!Lora.IsAdapterFolder(adapterDir)) throw new FineAlignException($"--adapter {adapterDir}: not a PEFT adapter folder (no {Lora.ConfigFile}).");
                var lora = Lora.MergeInto(lm, adapterDir);
                recipe.Out.WriteLine($"merged adapter {adapterDir} (LoRA r {lora.R}) into {resolved}");
            }
            var result = GgufExporter.Export(lm, resolved, target, ggmlType, Path.GetFileName(Path.GetFullPath(resolved).TrimEnd('/')));
            recipe.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"exported {resolved} ({lm.Config.ModelType} → GGUF '{result.Architecture}', {result.TensorCount} tensors, {result.Type}, " +
                $"vocabulary {result.TokenizerModel}/{result.Pre} of {result.VocabSize}) to {result.Path} ({result.Bytes / 1e6:F1} MB)"));
            return 0;
        });
        return cmd;
    }
}
