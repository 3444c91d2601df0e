using System.Text.RegularExpressions;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Architecture;

/// <summary>
/// The library's folders are a pipeline in data-flow order (docs/ARCHITECTURE.md): a folder may use the folders
/// before it (and the root-level utilities), never one after it; and a trainer never calls another trainer.
/// Read from the sources' <c>using</c> lines and qualified names, so a backward reference fails here with its file.
/// </summary>
public class LayeringTests
{
    private static readonly string[] Order = ["Text", "Data", "Models", "Generation", "Rewards", "Objectives", "Training", "Trainers", "Evaluation"];

    /// <summary>
    /// Known backward references, each with its reason. Only for the two folders other work owns (Text/, Evaluation/);
    /// keep it short and empty it when they are fixed.
    /// </summary>
    private static readonly (string File, string Uses, string Reason)[] Exceptions = [];

    private static string Library => Path.Combine(TestPaths.RepoRoot, "src", "FineAlign");

    private static IEnumerable<(string File, string Folder, string Text)> Sources() =>
        Directory.EnumerateFiles(Library, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            .Select(f => (File: Path.GetRelativePath(Library, f).Replace('\\', '/'), Folder: Path.GetRelativePath(Library, f).Split(Path.DirectorySeparatorChar)[0], Text: File.ReadAllText(f)))
            .Where(s => Order.Contains(s.Folder));

    /// <summary>The library folders a source refers to: <c>using FineAlign.X</c>, <c>FineAlign.X.</c> and bare <c>X.Type.</c> names.</summary>
    private static IEnumerable<string> Uses(string text)
    {
        var code = Regex.Replace(text, @"//[^\n]*", ""); // comments (and doc comments) may name any folder
        foreach (Match m in Regex.Matches(code, @"\bFineAlign\.(\w+)"))
            yield return m.Groups[1].Value;
        // Inside namespace FineAlign.*, "Data.Corpus.X" or "Trainers.Y" resolve to the library's folders; "System.Text.Json" does not.
        foreach (Match m in Regex.Matches(code, @"(?<![\w.])(Data|Models|Generation|Rewards|Objectives|Training|Trainers|Evaluation)\.[A-Z]\w*"))
            yield return m.Groups[1].Value;
    }

    [Fact]
    public void NoFolderUsesALaterOne()
    {
        var problems = new List<string>();
        foreach (var (file, folder, text) in Sources())
        {
            int own = Array.IndexOf(Order, folder);
            foreach (var used in Uses(text).Distinct())
            {
                int at = Array.IndexOf(Order, used);
                if (at > own && !Exceptions.Any(e => e.File == file && e.Uses == used))
                    problems.Add($"{file} ({folder}) uses {used}, a later stage");
            }
        }
        Assert.True(problems.Count == 0, "backward references:\n" + string.Join("\n", problems));
    }

    [Fact]
    public void EveryFileDeclaresTheNamespaceOfItsFolder()
    {
        var wrong = Sources().Where(s => !Regex.IsMatch(s.Text, $@"^namespace FineAlign\.{s.Folder}(\.\w+)*;", RegexOptions.Multiline))
            .Select(s => s.File).ToList();
        Assert.True(wrong.Count == 0, "files outside their folder's namespace: " + string.Join(", ", wrong));
    }

    [Fact]
    public void TrainersDoNotCallEachOther()
    {
        var trainerFiles = Sources().Where(s => s.Folder == "Trainers").ToList();
        var trainers = trainerFiles.SelectMany(s => Regex.Matches(s.Text, @"\bclass (\w+Trainer)\b").Select(m => (Name: m.Groups[1].Value, s.File))).ToList();
        var problems = new List<string>();
        foreach (var (file, _, text) in trainerFiles)
        {
            var code = Regex.Replace(text, @"//[^\n]*", "");
            foreach (var (name, home) in trainers)
                if (home != file && Regex.IsMatch(code, $@"\b{name}\b"))
                    problems.Add($"{file} uses {name} ({home})");
        }
        Assert.True(problems.Count == 0, "trainers calling trainers (move the shared part below Trainers):\n" + string.Join("\n", problems));
    }

    [Fact]
    public void ExceptionsAreOnlyForTheFoldersOwnedElsewhereAndStillNeeded()
    {
        foreach (var (file, uses, reason) in Exceptions)
        {
            Assert.True(file.StartsWith("Text/") || file.StartsWith("Evaluation/"), $"{file}: exceptions are only for Text/ and Evaluation/");
            Assert.False(string.IsNullOrWhiteSpace(reason), $"{file}: give the reason");
            var text = File.ReadAllText(Path.Combine(Library, file));
            Assert.Contains(uses, Uses(text)); // a fixed exception must leave the list
        }
    }
}
