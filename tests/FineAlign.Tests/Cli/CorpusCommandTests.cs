using FineAlign.Cli;
using FineAlign.Data.Corpus;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Cli;

public class CorpusCommandTests
{
    [Fact]
    public void Corpus_writes_all_files_deterministically()
    {
        using var tmp = TestPaths.NewTempDir();
        string a = Path.Combine(tmp.Path, "a"), b = Path.Combine(tmp.Path, "b");
        var r1 = CliRunner.Run("corpus", "--out", a, "--seed", "5", "--count", "300");
        var r2 = CliRunner.Run("corpus", "--out", b, "--seed", "5", "--count", "300");
        Assert.Equal(0, r1.Code);
        Assert.Equal("", r1.Err);
        Assert.Contains("wrote 300 reviews", r1.Out);
        foreach (var f in CorpusExport.FileNames)
            Assert.Equal(File.ReadAllBytes(Path.Combine(a, f)), File.ReadAllBytes(Path.Combine(b, f)));
        Assert.Equal(ReviewCorpus.Generate(5, 300).Select(r => r.Text), File.ReadAllLines(Path.Combine(a, "pretrain.txt")));
        // Nothing but the declared files; the temporary folder is gone.
        Assert.Equal(CorpusExport.FileNames.Order(StringComparer.Ordinal), Directory.GetFiles(a).Select(Path.GetFileName).Order(StringComparer.Ordinal)!);
        Assert.Equal(2, Directory.GetFileSystemEntries(tmp.Path).Length);
    }

    [Fact]
    public void Flag_overrides_yaml_which_overrides_default()
    {
        using var tmp = TestPaths.NewTempDir();
        string yaml = Path.Combine(tmp.Path, "recipe.yaml");
        string outDir = Path.Combine(tmp.Path, "out");
        File.WriteAllText(yaml, $"seed: 8\ncount: 40\nout: {outDir}\neval_fraction: 0.5\n");
        var r = CliRunner.Run("corpus", "--config", yaml, "--seed", "9");
        Assert.Equal(0, r.Code);
        // count (40) and out from YAML, seed 9 from the flag.
        Assert.Equal(ReviewCorpus.Generate(9, 40).Select(x => x.Text), File.ReadAllLines(Path.Combine(outDir, "pretrain.txt")));
    }

    [Fact]
    public void Missing_output_parent_that_is_a_file_gives_one_line_error()
    {
        using var tmp = TestPaths.NewTempDir();
        string file = Path.Combine(tmp.Path, "blocker");
        File.WriteAllText(file, "x");
        var r = CliRunner.Run("corpus", "--out", file, "--count", "5");
        Assert.Equal(1, r.Code);
        Assert.Single(CliRunner.Lines(r.Err));
        Assert.StartsWith("error: output path", r.Err);
        Assert.Equal("x", File.ReadAllText(file));
    }

    [Fact]
    public async Task Cancellation_exits_130_and_leaves_no_output_folder()
    {
        using var tmp = TestPaths.NewTempDir();
        string outDir = Path.Combine(tmp.Path, "out");
        var output = new StringWriter();
        var error = new StringWriter();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        int code = await CliApp.RunAsync(["corpus", "--out", outDir, "--count", "50"], output, error, cts.Token);
        Assert.Equal(130, code);
        Assert.Equal("error: cancelled", error.ToString().Trim());
        Assert.False(Directory.Exists(outDir));
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Output_folder_is_not_half_written_on_error()
    {
        using var tmp = TestPaths.NewTempDir();
        string fresh = Path.Combine(tmp.Path, "fresh");
        var ex = Assert.Throws<FineAlignException>(() => OutputFolder.Write<int>(fresh, dir =>
        {
            File.WriteAllText(Path.Combine(dir, "part1.txt"), "written");
            throw new FineAlignException("boom");
        }));
        Assert.Equal("boom", ex.Message);
        Assert.False(Directory.Exists(fresh));
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));   // temp folder removed

        // An existing folder keeps its old files when the new write fails, and gets the new ones when it succeeds.
        string existing = Path.Combine(tmp.Path, "existing");
        Directory.CreateDirectory(existing);
        File.WriteAllText(Path.Combine(existing, "part1.txt"), "old");
        Assert.Throws<FineAlignException>(() => OutputFolder.Write<int>(existing, dir =>
        {
            File.WriteAllText(Path.Combine(dir, "part1.txt"), "new");
            throw new FineAlignException("boom");
        }));
        Assert.Equal("old", File.ReadAllText(Path.Combine(existing, "part1.txt")));
        int n = OutputFolder.Write(existing, dir => { File.WriteAllText(Path.Combine(dir, "part1.txt"), "new"); return 7; });
        Assert.Equal(7, n);
        Assert.Equal("new", File.ReadAllText(Path.Combine(existing, "part1.txt")));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(tmp.Path), p => Path.GetFileName(p).StartsWith('.'));
    }
}
