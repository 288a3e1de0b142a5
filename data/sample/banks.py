"""Hand-written sentence banks for the sample corpus: wiki-style and forum-style sentences per language.

Slots: {c} a town, {r} a river, {p} a person, {y} a year, {n} a number, {m} a small number.
"""

# ruff: noqa: E501 - one sentence per line reads better than wrapped prose

WIKI = {
    "en": """\
{c} is a market town in the north of the county, with a population of about {n} people.
The town grew up around a river crossing on the {r}, and a bridge has stood there since {y}.
In the early modern period the local economy depended on wool, leather and the weekly cattle market.
The parish church of St Mary dates mainly from the fifteenth century, although parts of the tower are older.
A railway station opened in {y}, which brought visitors from the larger cities and changed the shape of the town.
The old grammar school was founded by {p} and still occupies its original building near the square.
Most of the houses in the historic centre are built of local stone and have slate roofs.
The surrounding countryside is used for dairy farming, and several footpaths follow the valley of the {r}.
During the nineteenth century a number of mills were built along the river to spin cotton and weave cloth.
The town council meets in a hall that was rebuilt after a fire destroyed the first one in {y}.
Local football and cricket clubs play their home games on the recreation ground to the east of the centre.
A small museum describes the history of the area, including the canal that once carried coal to the coast.
The climate is mild and wet, with most rain falling between October and January.
{p} was born in the town in {y} and later became known for her work on the history of the region.
Bus services connect the town with the county capital, and the journey takes about {m} minutes.
The annual summer fair has been held on the first weekend of July for more than a century.
Archaeologists have found the remains of a Roman road and a small farmstead on the hill above the town.
The population fell after the mills closed, but it has grown again since the new housing estates were built.
There are two primary schools and one secondary school, which together teach around {n} pupils.
The name of the town is thought to come from an old word meaning the farm by the ford.
The {r} flows for about {m} kilometres before it joins a larger river near the coast.
Several species of rare birds nest in the wetlands at the mouth of the {r}.
In {y} the town was granted a charter that allowed it to hold a market every Thursday.
The library was paid for by a local merchant and opened to the public in {y}.
""",
    "de": """\
{c} ist eine Kleinstadt im Norden des Landkreises und hat etwa {n} Einwohner.
Die Stadt entstand an einer alten Furt über die {r}, an der seit {y} eine Brücke steht.
Im Mittelalter lebten die meisten Bewohner vom Handel mit Salz, Tuch und Getreide.
Die evangelische Stadtkirche wurde im fünfzehnten Jahrhundert im gotischen Stil errichtet.
Im Jahr {y} erhielt die Stadt einen Bahnhof, der die Verbindung zu den größeren Städten deutlich verbesserte.
Das Gymnasium wurde von {p} gegründet und befindet sich bis heute in dem alten Gebäude am Marktplatz.
Die Altstadt ist von Fachwerkhäusern geprägt, die nach dem großen Brand sorgfältig wieder aufgebaut wurden.
Die Umgebung wird landwirtschaftlich genutzt, und mehrere Wanderwege führen durch das Tal der {r}.
Im neunzehnten Jahrhundert entstanden entlang des Flusses zahlreiche Mühlen und eine große Papierfabrik.
Der Gemeinderat tagt im Rathaus, das nach einem Brand im Jahr {y} neu gebaut werden musste.
Der örtliche Sportverein hat eine Fußballabteilung, eine Turnabteilung und eine erfolgreiche Handballmannschaft.
Ein kleines Heimatmuseum zeigt die Geschichte der Region und die Entwicklung des Bergbaus.
Das Klima ist gemäßigt, mit warmen Sommern und relativ milden Wintern.
{p} wurde {y} in der Stadt geboren und wurde später als Schriftsteller und Übersetzer bekannt.
Mit dem Bus erreicht man die Kreisstadt in etwa {m} Minuten.
Das jährliche Stadtfest findet am ersten Wochenende im Juli statt und zieht viele Besucher an.
Bei Ausgrabungen wurden Reste einer römischen Straße und eines kleinen Gutshofs entdeckt.
Nach der Schließung der Fabriken sank die Einwohnerzahl, doch seit einigen Jahren wächst die Stadt wieder.
Es gibt zwei Grundschulen und eine weiterführende Schule mit zusammen rund {n} Schülern.
Der Name der Stadt geht vermutlich auf ein altes Wort für einen Hof an der Furt zurück.
Die {r} ist etwa {m} Kilometer lang und mündet in der Nähe der Grenze in einen größeren Fluss.
In den Feuchtwiesen an der {r} brüten mehrere seltene Vogelarten.
Im Jahr {y} erhielt der Ort das Marktrecht und durfte jeden Donnerstag einen Wochenmarkt abhalten.
Die Stadtbibliothek wurde von einem reichen Kaufmann gestiftet und {y} eröffnet.
""",
    "es": """\
{c} es un municipio situado en el norte de la provincia y cuenta con unos {n} habitantes.
La localidad creció junto a un antiguo vado del río {r}, donde existe un puente desde {y}.
Durante la Edad Media la economía local dependía del comercio de lana, vino y aceite.
La iglesia parroquial fue construida en el siglo quince y conserva un retablo de gran valor.
En {y} se inauguró la estación de ferrocarril, que mejoró mucho la comunicación con la capital.
El antiguo colegio fue fundado por {p} y todavía ocupa su edificio original junto a la plaza mayor.
El casco histórico conserva casas de piedra con balcones de madera y calles estrechas.
El entorno se dedica a la agricultura, y varios senderos recorren el valle del río {r}.
En el siglo diecinueve se construyeron varios molinos y una fábrica de harina a orillas del río.
El ayuntamiento se encuentra en un edificio que fue reconstruido tras un incendio en {y}.
El club de fútbol local juega sus partidos en un campo municipal situado al este del pueblo.
Un pequeño museo explica la historia de la comarca y la importancia de la minería en la zona.
El clima es mediterráneo, con veranos calurosos y secos e inviernos suaves.
{p} nació en el pueblo en {y} y más tarde fue conocida por sus estudios sobre la historia de la región.
El autobús tarda unos {m} minutos en llegar a la capital de la provincia.
Las fiestas patronales se celebran a mediados de agosto y atraen a visitantes de toda la comarca.
Los arqueólogos encontraron restos de una calzada romana y de una pequeña villa en la colina.
La población disminuyó tras el cierre de las fábricas, pero ha vuelto a crecer en los últimos años.
Hay dos colegios de primaria y un instituto, que en total reciben a unos {n} alumnos.
El nombre del pueblo procede probablemente de una palabra antigua que significa granja junto al vado.
El río {r} tiene una longitud de unos {m} kilómetros y desemboca en un río mayor cerca de la costa.
En los humedales de la desembocadura del {r} anidan varias especies de aves protegidas.
En {y} el pueblo obtuvo el derecho a celebrar un mercado semanal todos los jueves.
La biblioteca municipal fue donada por un comerciante de la localidad y abrió sus puertas en {y}.
""",
    "fr": """\
{c} est une commune située au nord du département, qui compte environ {n} habitants.
La ville s'est développée autour d'un ancien gué sur la {r}, où un pont existe depuis {y}.
Au Moyen Âge, l'économie locale reposait sur le commerce du sel, du drap et des céréales.
L'église paroissiale date du quinzième siècle et abrite un retable classé monument historique.
Une gare a été ouverte en {y}, ce qui a beaucoup amélioré les liaisons avec les grandes villes.
Le collège a été fondé par {p} et occupe toujours son bâtiment d'origine près de la place du marché.
Le centre historique conserve de nombreuses maisons à colombages et des ruelles étroites.
Les environs sont consacrés à l'élevage, et plusieurs sentiers de randonnée suivent la vallée de la {r}.
Au dix-neuvième siècle, plusieurs moulins et une papeterie ont été construits le long de la rivière.
La mairie se trouve dans un bâtiment reconstruit après un incendie survenu en {y}.
Le club de football local joue ses matchs sur un terrain municipal situé à l'est de la ville.
Un petit musée présente l'histoire de la région et le rôle des mines de charbon dans son développement.
Le climat est océanique, avec des hivers doux et des étés plutôt frais.
{p} est née dans la commune en {y} et s'est ensuite fait connaître par ses travaux sur l'histoire locale.
Le trajet en car jusqu'à la préfecture dure environ {m} minutes.
La fête de la ville a lieu chaque année le premier week-end de juillet et attire de nombreux visiteurs.
Des fouilles ont mis au jour les restes d'une voie romaine et d'une petite villa sur la colline.
La population a diminué après la fermeture des usines, mais elle augmente de nouveau depuis quelques années.
La commune compte deux écoles primaires et un collège, qui accueillent au total environ {n} élèves.
Le nom de la ville viendrait d'un ancien mot désignant une ferme située près du gué.
La {r} mesure environ {m} kilomètres et se jette dans un fleuve plus important près de la côte.
Plusieurs espèces d'oiseaux rares nichent dans les marais situés à l'embouchure de la {r}.
En {y}, la ville a obtenu le droit de tenir un marché chaque jeudi.
La bibliothèque municipale a été offerte par un riche négociant et inaugurée en {y}.
""",
    "it": """\
{c} è un comune situato nella parte settentrionale della provincia e conta circa {n} abitanti.
Il paese è cresciuto intorno a un antico guado sul fiume {r}, dove esiste un ponte dal {y}.
Nel Medioevo l'economia locale si basava sul commercio di lana, vino e olio d'oliva.
La chiesa parrocchiale risale al quindicesimo secolo e conserva un prezioso altare in legno.
Nel {y} fu inaugurata la stazione ferroviaria, che migliorò molto i collegamenti con le città vicine.
Il liceo fu fondato da {p} e si trova ancora oggi nell'edificio originale accanto alla piazza.
Il centro storico è caratterizzato da case in pietra, vicoli stretti e piccole piazze.
Il territorio circostante è dedicato all'agricoltura, e diversi sentieri seguono la valle del fiume {r}.
Nel diciannovesimo secolo lungo il fiume furono costruiti diversi mulini e una cartiera.
Il municipio si trova in un palazzo ricostruito dopo un incendio avvenuto nel {y}.
La squadra di calcio locale gioca le partite in casa nello stadio comunale a est del paese.
Un piccolo museo racconta la storia della zona e il ruolo delle miniere nello sviluppo del territorio.
Il clima è mediterraneo, con estati calde e inverni piuttosto miti.
{p} nacque in paese nel {y} e divenne poi nota per i suoi studi sulla storia della regione.
In autobus si raggiunge il capoluogo di provincia in circa {m} minuti.
La festa del patrono si celebra a metà agosto e richiama visitatori da tutta la valle.
Gli archeologi hanno trovato i resti di una strada romana e di una piccola villa sulla collina.
La popolazione è diminuita dopo la chiusura delle fabbriche, ma negli ultimi anni è tornata a crescere.
Ci sono due scuole elementari e una scuola media, frequentate in totale da circa {n} alunni.
Il nome del paese deriverebbe da una antica parola che indicava una fattoria vicino al guado.
Il fiume {r} è lungo circa {m} chilometri e sfocia in un fiume più grande vicino alla costa.
Nelle zone umide alla foce del {r} nidificano diverse specie di uccelli protetti.
Nel {y} il paese ottenne il diritto di tenere un mercato ogni giovedì.
La biblioteca comunale fu donata da un ricco mercante e aperta al pubblico nel {y}.
""",
    "nl": """\
{c} is een kleine stad in het noorden van de provincie en telt ongeveer {n} inwoners.
De stad ontstond bij een oude doorwaadbare plaats in de {r}, waar sinds {y} een brug ligt.
In de middeleeuwen leefden de meeste inwoners van de handel in laken, turf en graan.
De protestantse kerk werd in de vijftiende eeuw gebouwd en heeft een opvallend hoge toren.
In {y} kreeg de stad een station, waardoor de verbinding met de grote steden sterk verbeterde.
De Latijnse school werd gesticht door {p} en staat nog steeds in het oude gebouw aan de markt.
De binnenstad heeft veel smalle straten en huizen met trapgevels uit de zeventiende eeuw.
Het omliggende gebied wordt gebruikt voor veeteelt, en verschillende wandelroutes volgen de oevers van de {r}.
In de negentiende eeuw werden langs de rivier een aantal molens en een steenfabriek gebouwd.
Het gemeentehuis is gevestigd in een gebouw dat na een brand in {y} opnieuw werd opgebouwd.
De plaatselijke voetbalclub speelt haar thuiswedstrijden op een sportpark aan de oostkant van de stad.
Een klein museum vertelt de geschiedenis van de streek en de rol van de scheepvaart.
Het klimaat is gematigd, met koele zomers en zachte, natte winters.
{p} werd in {y} in de stad geboren en werd later bekend door haar boeken over de geschiedenis van de regio.
Met de bus is men in ongeveer {m} minuten in de hoofdstad van de provincie.
Het jaarlijkse stadsfeest wordt gehouden in het eerste weekend van juli en trekt veel bezoekers.
Archeologen vonden de resten van een Romeinse weg en een kleine boerderij op de heuvel.
Na de sluiting van de fabrieken daalde het aantal inwoners, maar de laatste jaren groeit de stad weer.
Er zijn twee basisscholen en een middelbare school, met samen ongeveer {n} leerlingen.
De naam van de stad komt waarschijnlijk van een oud woord voor een boerderij bij de doorwaadbare plaats.
De {r} is ongeveer {m} kilometer lang en mondt in de buurt van de kust uit in een grotere rivier.
In de natte graslanden langs de {r} broeden verschillende zeldzame vogelsoorten.
In {y} kreeg de plaats marktrecht en mocht er elke donderdag een weekmarkt worden gehouden.
De openbare bibliotheek werd geschonken door een rijke koopman en ging in {y} open.
""",
    "pt": """\
{c} é um município situado no norte do distrito e tem cerca de {n} habitantes.
A vila cresceu em torno de uma antiga passagem do rio {r}, onde existe uma ponte desde {y}.
Na Idade Média a economia local dependia do comércio de lã, vinho e azeite.
A igreja matriz foi construída no século quinze e guarda um retábulo de grande valor.
Em {y} foi inaugurada a estação de caminho de ferro, que melhorou muito a ligação com a capital.
O antigo liceu foi fundado por {p} e ainda ocupa o edifício original junto à praça principal.
O centro histórico conserva casas de pedra com varandas de ferro e ruas estreitas.
A região em volta dedica-se à agricultura, e vários percursos pedestres seguem o vale do rio {r}.
No século dezanove foram construídos vários moinhos e uma fábrica de papel nas margens do rio.
A câmara municipal funciona num edifício que foi reconstruído depois de um incêndio em {y}.
O clube de futebol local joga os seus jogos num campo municipal situado a leste da vila.
Um pequeno museu apresenta a história da região e a importância das minas para o seu desenvolvimento.
O clima é mediterrânico, com verões quentes e secos e invernos suaves.
{p} nasceu na vila em {y} e tornou-se mais tarde conhecida pelos seus estudos sobre a história da região.
De autocarro chega-se à sede do distrito em cerca de {m} minutos.
As festas da vila realizam-se em meados de agosto e atraem visitantes de toda a região.
Os arqueólogos encontraram restos de uma estrada romana e de uma pequena villa na colina.
A população diminuiu depois do encerramento das fábricas, mas voltou a crescer nos últimos anos.
Há duas escolas primárias e uma escola secundária, que recebem no total cerca de {n} alunos.
O nome da vila vem provavelmente de uma palavra antiga que significa quinta junto à passagem do rio.
O rio {r} tem cerca de {m} quilómetros e desagua num rio maior perto da costa.
Nas zonas húmidas da foz do {r} nidificam várias espécies de aves protegidas.
Em {y} a vila recebeu o direito de realizar um mercado todas as quintas-feiras.
A biblioteca municipal foi oferecida por um comerciante da terra e abriu ao público em {y}.
""",
}

FORUM = {
    "en": """\
I have been trying to fix this for about {m} days and I am running out of ideas.
Has anyone else had the same problem with the heating in an old house like this?
Thanks for the quick reply, that was exactly what I needed to know.
I would check the fuse box first, because that is the most common cause of this kind of fault.
We stayed in {c} last summer and the people there were really friendly and helpful.
The trick is to let the dough rest for at least an hour before you shape it.
My brother had the same car for {m} years and never had any trouble with the gearbox.
If you want a quiet place to stay, I can recommend the small guest house near the river.
In my experience the cheaper brands work just as well, as long as you clean them regularly.
Could you post a photo of the part that is broken so we can see what is going on?
I agree with the previous answer, but I would add that you should also check the seals.
Does anyone know whether the museum in {c} is open on Mondays during the winter?
We planted the tomatoes too early this year and lost most of them to the late frost.
Update: I replaced the battery and now everything works again, so thank you all for the help.
The forum rules say that you should search for older threads before you start a new one.
I bought the book that {p} recommended and I have to say it was worth every penny.
""",
    "de": """\
Ich versuche seit {m} Tagen, das Problem zu lösen, und mir gehen langsam die Ideen aus.
Hat jemand von euch schon einmal das gleiche Problem mit der Heizung in einem Altbau gehabt?
Danke für die schnelle Antwort, genau das wollte ich wissen.
Ich würde zuerst den Sicherungskasten prüfen, weil das meistens die Ursache für so einen Fehler ist.
Wir waren letzten Sommer in {c} und die Leute dort waren wirklich sehr freundlich.
Der Trick ist, den Teig mindestens eine Stunde ruhen zu lassen, bevor man ihn formt.
Mein Bruder hatte das gleiche Auto {m} Jahre lang und nie Probleme mit dem Getriebe.
Wenn ihr eine ruhige Unterkunft sucht, kann ich die kleine Pension am Fluss empfehlen.
Meiner Erfahrung nach funktionieren die günstigen Marken genauso gut, wenn man sie regelmäßig reinigt.
Kannst du ein Foto von dem kaputten Teil hochladen, damit wir sehen, was los ist?
Ich stimme der vorherigen Antwort zu, würde aber auch noch die Dichtungen kontrollieren.
Weiß jemand, ob das Museum in {c} im Winter auch montags geöffnet hat?
Wir haben die Tomaten dieses Jahr zu früh gepflanzt und fast alle durch den späten Frost verloren.
Nachtrag: Ich habe die Batterie gewechselt und jetzt funktioniert wieder alles, vielen Dank an alle.
Laut den Forenregeln soll man erst nach älteren Beiträgen suchen, bevor man ein neues Thema eröffnet.
Ich habe das Buch gekauft, das {p} empfohlen hat, und es hat sich wirklich gelohnt.
""",
    "es": """\
Llevo {m} días intentando arreglar esto y ya no sé qué más probar.
¿Alguien ha tenido el mismo problema con la calefacción en una casa antigua como esta?
Gracias por la respuesta tan rápida, era justo lo que necesitaba saber.
Yo revisaría primero el cuadro eléctrico, porque suele ser la causa más común de este tipo de avería.
Estuvimos en {c} el verano pasado y la gente allí fue muy amable con nosotros.
El truco está en dejar reposar la masa al menos una hora antes de darle forma.
Mi hermano tuvo el mismo coche durante {m} años y nunca tuvo problemas con la caja de cambios.
Si buscáis un sitio tranquilo para dormir, os recomiendo la pequeña pensión que está junto al río.
Según mi experiencia, las marcas más baratas funcionan igual de bien si se limpian con frecuencia.
¿Puedes subir una foto de la pieza rota para que veamos qué está pasando?
Estoy de acuerdo con la respuesta anterior, pero yo también revisaría las juntas.
¿Alguien sabe si el museo de {c} abre los lunes durante el invierno?
Este año plantamos los tomates demasiado pronto y perdimos casi todos por la helada tardía.
Actualización: cambié la batería y ahora todo funciona otra vez, así que gracias a todos por la ayuda.
Las normas del foro dicen que hay que buscar en los temas antiguos antes de abrir uno nuevo.
Compré el libro que recomendó {p} y la verdad es que mereció la pena.
""",
    "fr": """\
J'essaie de régler ce problème depuis {m} jours et je commence à manquer d'idées.
Est-ce que quelqu'un a déjà eu le même souci avec le chauffage dans une vieille maison ?
Merci pour la réponse rapide, c'est exactement ce que je voulais savoir.
Je vérifierais d'abord le tableau électrique, car c'est la cause la plus fréquente de ce genre de panne.
Nous sommes allés à {c} l'été dernier et les habitants ont été vraiment très accueillants.
L'astuce consiste à laisser reposer la pâte au moins une heure avant de la façonner.
Mon frère a gardé la même voiture pendant {m} ans sans jamais avoir de problème de boîte de vitesses.
Si vous cherchez un endroit calme pour dormir, je vous conseille la petite maison d'hôtes près de la rivière.
D'après mon expérience, les marques moins chères fonctionnent tout aussi bien si on les nettoie souvent.
Tu peux poster une photo de la pièce cassée pour que l'on voie ce qui se passe ?
Je suis d'accord avec la réponse précédente, mais je vérifierais aussi les joints.
Quelqu'un sait-il si le musée de {c} est ouvert le lundi en hiver ?
Nous avons planté les tomates trop tôt cette année et nous en avons perdu la plupart à cause du gel.
Mise à jour : j'ai changé la batterie et tout fonctionne de nouveau, merci à tous pour votre aide.
Le règlement du forum demande de chercher dans les anciens sujets avant d'en ouvrir un nouveau.
J'ai acheté le livre que {p} a recommandé et je dois dire qu'il valait vraiment le coup.
""",
    "it": """\
Sto cercando di risolvere questo problema da {m} giorni e ormai non so più cosa provare.
Qualcuno ha mai avuto lo stesso problema con il riscaldamento in una casa vecchia come questa?
Grazie per la risposta veloce, era proprio quello che volevo sapere.
Io controllerei prima il quadro elettrico, perché di solito è la causa più comune di questo guasto.
Siamo stati a {c} l'estate scorsa e la gente del posto è stata davvero molto gentile.
Il segreto è lasciare riposare l'impasto almeno un'ora prima di dargli la forma.
Mio fratello ha tenuto la stessa macchina per {m} anni e non ha mai avuto problemi con il cambio.
Se cercate un posto tranquillo per dormire, vi consiglio la piccola pensione vicino al fiume.
Secondo la mia esperienza le marche più economiche funzionano altrettanto bene, se le pulisci spesso.
Puoi caricare una foto del pezzo rotto così vediamo che cosa succede?
Sono d'accordo con la risposta precedente, ma controllerei anche le guarnizioni.
Qualcuno sa se il museo di {c} è aperto il lunedì durante l'inverno?
Quest'anno abbiamo piantato i pomodori troppo presto e li abbiamo persi quasi tutti per la gelata.
Aggiornamento: ho cambiato la batteria e adesso funziona tutto di nuovo, grazie a tutti per l'aiuto.
Il regolamento del forum chiede di cercare nelle discussioni vecchie prima di aprirne una nuova.
Ho comprato il libro consigliato da {p} e devo dire che ne è valsa la pena.
""",
    "nl": """\
Ik probeer dit probleem al {m} dagen op te lossen en ik weet echt niet meer wat ik moet doen.
Heeft iemand van jullie hetzelfde probleem gehad met de verwarming in een oud huis?
Bedankt voor het snelle antwoord, dat is precies wat ik wilde weten.
Ik zou eerst de meterkast controleren, want dat is meestal de oorzaak van zo'n storing.
We waren vorige zomer in {c} en de mensen daar waren echt heel vriendelijk.
De truc is om het deeg minstens een uur te laten rusten voordat je het vormt.
Mijn broer heeft dezelfde auto {m} jaar gehad en nooit problemen gehad met de versnellingsbak.
Als je een rustige plek zoekt om te overnachten, kan ik het kleine pension bij de rivier aanraden.
In mijn ervaring werken de goedkopere merken net zo goed, als je ze maar regelmatig schoonmaakt.
Kun je een foto plaatsen van het onderdeel dat kapot is, zodat we kunnen zien wat er aan de hand is?
Ik ben het eens met het vorige antwoord, maar ik zou ook de rubbers nakijken.
Weet iemand of het museum in {c} in de winter ook op maandag open is?
We hebben de tomaten dit jaar te vroeg geplant en bijna allemaal verloren door de late vorst.
Update: ik heb de accu vervangen en nu werkt alles weer, dus iedereen bedankt voor de hulp.
Volgens de regels van het forum moet je eerst in oude onderwerpen zoeken voordat je een nieuw begint.
Ik heb het boek gekocht dat {p} aanraadde en het was echt de moeite waard.
""",
    "pt": """\
Estou a tentar resolver isto há {m} dias e já não sei o que mais experimentar.
Alguém já teve o mesmo problema com o aquecimento numa casa antiga como esta?
Obrigado pela resposta rápida, era exatamente o que eu precisava de saber.
Eu verificaria primeiro o quadro elétrico, porque costuma ser a causa mais comum deste tipo de avaria.
Estivemos em {c} no verão passado e as pessoas de lá foram muito simpáticas connosco.
O segredo é deixar a massa descansar pelo menos uma hora antes de lhe dar forma.
O meu irmão teve o mesmo carro durante {m} anos e nunca teve problemas com a caixa de velocidades.
Se procuram um sítio sossegado para dormir, recomendo a pequena pensão que fica junto ao rio.
Pela minha experiência, as marcas mais baratas funcionam igualmente bem, desde que sejam limpas com frequência.
Podes publicar uma fotografia da peça partida para vermos o que se passa?
Concordo com a resposta anterior, mas também verificaria as borrachas de vedação.
Alguém sabe se o museu de {c} abre às segundas-feiras durante o inverno?
Este ano plantámos os tomates cedo demais e perdemos quase todos por causa da geada.
Atualização: troquei a bateria e agora está tudo a funcionar outra vez, obrigado a todos pela ajuda.
As regras do fórum dizem que devemos procurar nos tópicos antigos antes de abrir um novo.
Comprei o livro que {p} recomendou e tenho de dizer que valeu mesmo a pena.
""",
}

SLOTS = {
    "en": {
        "c": "Ashford Kendal Ludlow Thirsk Wareham Hexham Malton Tetbury Bampton Ripon Settle Alnwick".split(),
        "r": "Severn Wye Tees Eden Ouse Derwent Avon Lune Teme Dove".split(),
        "p": ["Mary Whitfield", "John Carver", "Eleanor Hart", "Thomas Reed", "Margaret Lowe", "William Ash"],
    },
    "de": {
        "c": "Lindau Höxter Marburg Wertheim Celle Weilburg Eschwege Rinteln Kitzingen Bad Urach".split(" "),
        "r": "Lahn Fulda Werra Eder Nahe Tauber Ilm Saale Mulde Lippe".split(),
        "p": [
            "Anna Vogel",
            "Heinrich Brandt",
            "Clara Schulte",
            "Friedrich Lorenz",
            "Marie Köhler",
            "Karl Winter",
        ],
    },
    "es": {
        "c": "Tudela Alcañiz Baeza Ronda Zafra Olite Béjar Tarazona Llanes Cuéllar".split(),
        "r": "Ebro Duero Tajo Júcar Segura Genil Jalón Tormes Sil Órbigo".split(),
        "p": [
            "Carmen Ruiz",
            "Miguel Serrano",
            "Lucía Navarro",
            "Antonio Vidal",
            "Isabel Prieto",
            "José Marín",
        ],
    },
    "fr": {
        "c": "Dinan Millau Auxerre Chinon Figeac Saumur Vitré Sarlat Cahors Langres".split(),
        "r": "Loire Dordogne Vienne Marne Sarthe Creuse Meuse Saône Allier Charente".split(),
        "p": [
            "Jeanne Moreau",
            "Pierre Lefèvre",
            "Claire Dubois",
            "Louis Garnier",
            "Marie Lambert",
            "Henri Roux",
        ],
    },
    "it": {
        "c": "Bassano Chiavari Spoleto Urbino Bobbio Gubbio Asolo Cortona Tivoli Sulmona".split(),
        "r": "Adige Brenta Piave Tevere Arno Ticino Reno Metauro Sesia Oglio".split(),
        "p": [
            "Giulia Rossi",
            "Marco Bianchi",
            "Francesca Ricci",
            "Luigi Conti",
            "Elena Gallo",
            "Paolo Greco",
        ],
    },
    "nl": {
        "c": "Zutphen Harderwijk Kampen Doesburg Hattem Elburg Sneek Tiel Brielle Hulst".split(),
        "r": "IJssel Vecht Dommel Berkel Dinkel Linge Regge Aa Rotte Amstel".split(),
        "p": ["Anna de Vries", "Jan Bakker", "Sophie Visser", "Pieter Smit", "Maria Mulder", "Willem Bos"],
    },
    "pt": {
        "c": "Tomar Amarante Lamego Chaves Estremoz Peniche Viseu Tavira Óbidos Mértola".split(),
        "r": "Tejo Douro Mondego Minho Guadiana Sado Zêzere Vouga Tâmega Lima".split(),
        "p": ["Ana Ferreira", "João Pereira", "Maria Costa", "António Lopes", "Inês Martins", "Rui Almeida"],
    },
}

# Text in languages the project does not train on, to be dropped by language ID.
OUT_OF_SCOPE = {
    "pl": [
        "Miasto leży nad rzeką i liczy około dwudziestu tysięcy mieszkańców.",
        "W średniowieczu mieszkańcy zajmowali się handlem zbożem i suknem.",
        "Kościół parafialny zbudowano w piętnastym wieku w stylu gotyckim.",
        "Dworzec kolejowy otwarto pod koniec dziewiętnastego wieku.",
        "Okolice miasta są wykorzystywane głównie do uprawy zbóż i hodowli bydła.",
        "Co roku w lipcu odbywa się tu festyn, który przyciąga wielu turystów.",
    ],
    "ru": [
        "Город расположен на берегу реки и насчитывает около двадцати тысяч жителей.",
        "В средние века жители занимались торговлей зерном и тканями.",
        "Приходская церковь была построена в пятнадцатом веке.",
        "Железнодорожная станция открылась в конце девятнадцатого века.",
        "Окрестности города используются в основном для сельского хозяйства.",
        "Каждый год в июле здесь проходит праздник, который привлекает много туристов.",
    ],
    "tr": [
        "Kasaba nehrin kıyısında yer alır ve yaklaşık yirmi bin nüfusa sahiptir.",
        "Orta Çağ'da halkın çoğu tahıl ve kumaş ticaretiyle geçinirdi.",
        "Eski cami on beşinci yüzyılda inşa edilmiştir.",
        "Tren istasyonu on dokuzuncu yüzyılın sonunda açıldı.",
        "Çevredeki topraklar çoğunlukla tarım ve hayvancılık için kullanılır.",
        "Her yıl temmuz ayında düzenlenen festival birçok turisti çeker.",
    ],
    "sv": [
        "Staden ligger vid floden och har omkring tjugo tusen invånare.",
        "Under medeltiden levde invånarna mest av handel med spannmål och tyg.",
        "Kyrkan byggdes på femtonhundratalet och har ett högt torn.",
        "Järnvägsstationen öppnades i slutet av artonhundratalet.",
        "Trakten runt staden används främst till jordbruk och boskapsskötsel.",
        "Varje år i juli hålls en marknad som lockar många besökare.",
    ],
}

# Sentence openers, so that the same bank sentence does not always start the same way.
CONNECTIVES = {
    "en": [
        "In addition,",
        "However,",
        "According to local records,",
        "Today",
        "As a result,",
        "Since then",
        "At the same time,",
        "By contrast,",
        "Later,",
        "In fact,",
        "For many visitors,",
        "Even now",
    ],
    "de": [
        "Außerdem",
        "Heute",
        "Später",
        "Zudem",
        "Damals",
        "Seitdem",
        "Bis heute",
        "Allerdings",
        "Inzwischen",
        "Tatsächlich",
        "Nach Angaben der Gemeinde",
        "Übrigens",
    ],
    "es": [
        "Además,",
        "Sin embargo,",
        "Hoy en día,",
        "Más tarde,",
        "Desde entonces,",
        "Al mismo tiempo,",
        "De hecho,",
        "Según los registros locales,",
        "Por otra parte,",
        "Todavía hoy,",
        "En cambio,",
        "Por eso,",
    ],
    "fr": [
        "En outre,",
        "Cependant,",
        "Aujourd'hui,",
        "Plus tard,",
        "Depuis,",
        "En même temps,",
        "En fait,",
        "Selon les archives locales,",
        "Par ailleurs,",
        "Encore aujourd'hui,",
        "En revanche,",
        "C'est pourquoi",
    ],
    "it": [
        "Inoltre,",
        "Tuttavia,",
        "Oggi",
        "Più tardi,",
        "Da allora,",
        "Allo stesso tempo,",
        "In effetti,",
        "Secondo i registri locali,",
        "D'altra parte,",
        "Ancora oggi,",
        "Invece,",
        "Per questo,",
    ],
    "nl": [
        "Bovendien",
        "Tegenwoordig",
        "Later",
        "Sindsdien",
        "Tegelijkertijd",
        "Eigenlijk",
        "Volgens de gemeente",
        "Daarnaast",
        "Nog steeds",
        "Daarentegen",
        "Daarom",
        "Overigens",
    ],
    "pt": [
        "Além disso,",
        "No entanto,",
        "Hoje em dia,",
        "Mais tarde,",
        "Desde então,",
        "Ao mesmo tempo,",
        "De facto,",
        "Segundo os registos locais,",
        "Por outro lado,",
        "Ainda hoje,",
        "Em contrapartida,",
        "Por isso,",
    ],
}

# Planted eval contamination: a page quotes an item of a bundled eval task after a lead-in (contaminated),
# or uses its words with an aside in the middle, so no n-gram is shared (a clean look-alike).
QUIZ = {
    "en": ("From last week's pub quiz:", "as everyone here knows,"),
    "de": ("Aus dem Quiz der letzten Woche:", "wie hier jeder weiß,"),
    "es": ("Del concurso de la semana pasada:", "como todos aquí saben,"),
    "fr": ("Du quiz de la semaine dernière :", "comme chacun ici le sait,"),
    "it": ("Dal quiz della settimana scorsa:", "come tutti qui sanno,"),
    "nl": ("Uit de quiz van vorige week:", "zoals iedereen hier weet,"),
    "pt": ("Do questionário da semana passada:", "como todos aqui sabem,"),
}
